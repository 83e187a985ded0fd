#!/usr/bin/env bash
# Provision Prometheus and promtool from Debian's `prometheus` package, idempotently, without
# installing it: the .deb is downloaded (`apt-get download`) and only its two binaries are
# unpacked, so nothing on the host changes and no service is started.
#
#   bash scripts/prometheus-dist.sh     # installs once, then only prints the bin dir
#
# Also the Prometheus Operator's PodMonitor and PrometheusRule CRDs (from its Go module, through
# the Go module proxy), so the chart's monitoring objects can be applied to the test cluster.
#
# Layout: <cache root, ~/.cache/fjord by default>/prometheus/<package version>/bin/{prometheus,promtool},
# .../<package version>/crds/monitoring.coreos.com_{podmonitors,prometheusrules}.yaml, and a
# `current` symlink to the version last provisioned. The last line on stdout is the bin dir.
set -euo pipefail

# The same cache root as the Rust side (fjord_e2e::tools::cache_root).
if [[ -n "${FJORD_CACHE_DIR:-}" ]]; then ROOT="$FJORD_CACHE_DIR"
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then ROOT="$XDG_CACHE_HOME/fjord"
else ROOT="$HOME/.cache/fjord"; fi
CACHE="$ROOT/prometheus"
mkdir -p "$CACHE"

candidate() { apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}'; }

VERSION="$(candidate)"
if [[ -z "$VERSION" || "$VERSION" == "(none)" ]]; then
  # The package lists may not be there yet on a fresh machine.
  apt-get update -qq >&2
  VERSION="$(candidate)"
fi
[[ -n "$VERSION" && "$VERSION" != "(none)" ]] || {
  echo "prometheus-dist: Debian has no prometheus package here" >&2
  exit 1
}
PROMETHEUS_OPERATOR_VERSION=v0.85.0
DEST="$CACHE/$VERSION"
CRDS_MARKER="$DEST/crds/.prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"

crds() {
  [[ -f "$CRDS_MARKER" ]] && return 0
  local module=github.com/prometheus-operator/prometheus-operator
  local proxy="${GOPROXY:-https://proxy.golang.org}"
  proxy="${proxy%%,*}"
  local stage
  stage="$(mktemp -d "$CACHE/.crds.XXXXXX")"
  echo "prometheus-dist: Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs from $proxy ..." >&2
  curl -fsSL --max-time 300 -o "$stage/module.zip" "$proxy/$module/@v/$PROMETHEUS_OPERATOR_VERSION.zip"
  python3 - "$stage/module.zip" "$stage/crds" "$module@$PROMETHEUS_OPERATOR_VERSION" <<'PY'
import sys, zipfile, os
archive, out, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(archive) as z:
    for kind in ("podmonitors", "prometheusrules"):
        name = f"{prefix}/example/prometheus-operator-crd/monitoring.coreos.com_{kind}.yaml"
        with open(os.path.join(out, os.path.basename(name)), "wb") as f:
            f.write(z.read(name))
PY
  rm -rf "$DEST/crds"
  mkdir -p "$DEST"
  mv "$stage/crds" "$DEST/crds"
  rm -rf "$stage"
  touch "$CRDS_MARKER"
}

if [[ -x "$DEST/bin/promtool" && -x "$DEST/bin/prometheus" ]]; then
  crds
  ln -sfn "$VERSION" "$CACHE/current"
  echo "$DEST/bin"
  exit 0
fi

STAGE="$(mktemp -d "$CACHE/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
echo "prometheus-dist: downloading Debian's prometheus $VERSION ..." >&2
# apt-get writes into the current directory. As root it warns that `_apt` cannot write to a
# private stage directory and downloads unsandboxed, which is fine here.
(cd "$STAGE" && apt-get download -q "prometheus=$VERSION" >&2)
dpkg-deb -x "$STAGE"/prometheus_*.deb "$STAGE/root"
mkdir -p "$STAGE/bin"
cp "$STAGE/root/usr/bin/promtool" "$STAGE/root/usr/bin/prometheus" "$STAGE/bin/"
"$STAGE/bin/promtool" --version >&2
rm -rf "$DEST/bin"
mkdir -p "$DEST"
mv "$STAGE/bin" "$DEST/bin"
crds
ln -sfn "$VERSION" "$CACHE/current"
echo "$DEST/bin"

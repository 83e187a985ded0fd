#!/usr/bin/env bash
# Provision Prometheus and promtool from Debian's `prometheus` package, idempotently, without
# installing it: the .deb is downloaded (`apt-get download`) and only its two binaries are
# unpacked, so nothing on the host changes and no service is started.
#
#   bash scripts/prometheus-dist.sh     # installs once, then only prints the bin dir
#
# Layout: <cache root, ~/.cache/fjord by default>/prometheus/<package version>/bin/{prometheus,promtool}
# and a `current` symlink to the version last provisioned. The last line on stdout is the bin dir.
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
DEST="$CACHE/$VERSION"
if [[ -x "$DEST/bin/promtool" && -x "$DEST/bin/prometheus" ]]; then
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
rm -rf "$DEST"
mkdir -p "$DEST"
mv "$STAGE/bin" "$DEST/bin"
ln -sfn "$VERSION" "$CACHE/current"
echo "$DEST/bin"

#!/usr/bin/env bash
# Idempotent Python venv for the compat tests and the bench harness.
#
#   bash scripts/python-env.sh     # prints the venv's python on the last line
#
# The venv lives at ${FJORD_CACHE_DIR:-~/.cache/fjord}/venv. pip runs only when the sha256 of
# tests/compat/requirements.txt differs from the stamp written after the last successful install.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQ="$HERE/../tests/compat/requirements.txt"
CACHE="${FJORD_CACHE_DIR:-${FJORD_CACHE:-$HOME/.cache/fjord}}"
VENV="$CACHE/venv"
STAMP="$VENV/.requirements.sha256"
PY="${PYTHON:-python3}"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$CACHE"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" >&2
fi
rm -f "$STAMP"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" >&2
# Import check: a wheel that installed but cannot load (missing shared lib) fails here, not in a test.
"$VENV/bin/python" - >&2 <<'PY'
import confluent_kafka, kafka, lz4.frame, zstandard, cramjam, pytest, pytest_timeout  # noqa: F401
import snappy  # noqa: F401  (python-snappy, on top of cramjam)
print("python-env: confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion(),
      "kafka-python", kafka.__version__)
PY
echo "$want" > "$STAMP"
echo "$VENV/bin/python"

#!/usr/bin/env bash
# Makes (once) the Python venv the tests use: the unmodified qdrant-client
# from PyPI. Idempotent: a venv whose requirements stamp matches is reused.
# Prints the venv's python path on stdout.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${BASALT_TEST_VENV:-$root/target/test-venv}"
req="$root/scripts/requirements-test.txt"
stamp="$venv/.basalt-requirements"
if [[ -x "$venv/bin/python" ]] && cmp -s "$req" "$stamp"; then
    echo "$venv/bin/python"
    exit 0
fi
python3 -m venv "$venv" >&2 || {
    # Debian's python3 ships venv separately.
    if command -v apt-get >/dev/null; then
        apt-get install -y python3-venv >&2 && python3 -m venv "$venv" >&2
    else
        exit 1
    fi
}
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
cp "$req" "$stamp"
echo "$venv/bin/python"

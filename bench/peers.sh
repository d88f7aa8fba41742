#!/usr/bin/env bash
# Create (if missing) the Python virtualenvs used by the peer benchmarks and
# print the installed versions.  Idempotent: an existing, working venv is
# left alone; a broken or half-made one is repaired by re-running pip.
#
#   bench/.venv-faiss    faiss-cpu + hnswlib + numpy + matplotlib  (exact GT,
#                        plotting, the in-memory peers)
#   bench/.venv-diskann  diskannpy==0.7.0 (pins numpy ~1.25, hence its own venv)
#
# Environment overrides:
#   HNSWLIB_SPEC  pip requirement for hnswlib             (default: hnswlib)
#   PYTHON        interpreter used to create the venvs   (default: python3.11 if found, else python3)
#   FAISS_SPEC    pip requirement for faiss               (default: faiss-cpu)
#   DISKANN_SPEC  pip requirement for diskannpy           (default: diskannpy==0.7.0)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# diskannpy 0.7.0 ships wheels up to CPython 3.11 only (none for 3.12+).
if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
FAISS_SPEC="${FAISS_SPEC:-faiss-cpu}"
DISKANN_SPEC="${DISKANN_SPEC:-diskannpy==0.7.0}"
HNSWLIB_SPEC="${HNSWLIB_SPEC:-hnswlib}"

make_venv() { # dir check-snippet pip-args...
    local dir="$1" check="$2"; shift 2
    if [[ ! -x "$dir/bin/python" ]]; then
        echo "[peers] creating $dir with $("$PYTHON" --version 2>&1)" >&2
        "$PYTHON" -m venv "$dir"
    fi
    if "$dir/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "[peers] $dir already provisioned" >&2
    else
        echo "[peers] installing into $dir: $*" >&2
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
        "$dir/bin/python" -c "$check"
    fi
}

make_venv "$here/.venv-faiss" \
    "import faiss, numpy, matplotlib, hnswlib" \
    "$FAISS_SPEC" numpy matplotlib "$HNSWLIB_SPEC"

# diskannpy's wheel declares its own numpy pin; let pip resolve it.
if [[ ! -x "$here/.venv-diskann/bin/python" && "$DISKANN_SPEC" == "diskannpy==0.7.0" ]]; then
    pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ "$(printf '%s\n3.11\n' "$pyver" | sort -V | tail -1)" != "3.11" ]]; then
        echo "[peers] $PYTHON is $pyver; diskannpy 0.7.0 needs CPython <= 3.11 (set PYTHON=python3.11)" >&2
        exit 1
    fi
fi
want_dap="${DISKANN_SPEC#*==}"
[[ "$want_dap" == "$DISKANN_SPEC" ]] && want_dap=""
make_venv "$here/.venv-diskann" \
    "import diskannpy, numpy; from importlib.metadata import version; assert '$want_dap' in ('', version('diskannpy'))" \
    "$DISKANN_SPEC"

echo "== .venv-faiss"
"$here/.venv-faiss/bin/python" - <<'PY'
import sys, faiss, numpy, matplotlib, hnswlib
from importlib.metadata import version
print(f"python {sys.version.split()[0]}  faiss {faiss.__version__}  hnswlib {version('hnswlib')}  numpy {numpy.__version__}  matplotlib {matplotlib.__version__}")
PY
echo "== .venv-diskann"
"$here/.venv-diskann/bin/python" - <<'PY'
import sys, numpy
from importlib.metadata import version
import diskannpy
print(f"python {sys.version.split()[0]}  diskannpy {version('diskannpy')}  numpy {numpy.__version__}")
PY

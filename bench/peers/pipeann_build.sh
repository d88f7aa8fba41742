#!/usr/bin/env bash
# Builds PipeANN (thustorage/PipeANN, OSDI'25) from a source tree the
# caller brings, for side-by-side runs with basalt (issue 13).
#
#   PIPEANN_SRC=/path/to/PipeANN bash bench/peers/pipeann_build.sh
#
# The source is not vendored here: export a checkout of the public
# repository (e.g. `git archive HEAD | tar -x -C DIR`) and point
# PIPEANN_SRC at it. Idempotent: packages already installed and steps
# already done are skipped.
#
# What it needs, as found on Debian 12 (bookworm):
# - make, cmake, g++, libaio-dev, libgoogle-perftools-dev (tcmalloc),
#   Boost headers and program_options, clang-format (its build runs it on
#   one tool);
# - Intel MKL (`libmkl-full-dev`, 2020.4), which Debian ships only in the
#   non-free component: this script adds that component for bookworm in
#   its own sources file when no candidate for the package is found;
# - liburing, from the copy in the repository's third_party/ (built here).
# Build flags as the repository's build.sh: Release, -march=native,
# ADDITIONAL_DEFINITIONS=-DDYN_PIPE_WIDTH (the pipeline width adapts).
# MAKE_JOBS (default 1) and NICE (default 19) keep it from taking the
# cores from a benchmark running beside it.
set -euo pipefail
: "${PIPEANN_SRC:?set PIPEANN_SRC to a PipeANN source tree}"
MAKE_JOBS=${MAKE_JOBS:-1}
NICE=${NICE:-19}
PKGS="make cmake g++ libaio-dev libgoogle-perftools-dev libboost-dev libboost-program-options-dev libmkl-full-dev clang-format"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if ! apt-cache policy libmkl-full-dev 2>/dev/null | grep -q "Candidate: [0-9]"; then
    # MKL is in Debian's non-free component only.
    cat > /etc/apt/sources.list.d/basalt-bench-nonfree.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  apt-get update -q
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive nice -n "$NICE" apt-get install -y -q $missing
fi

cd "$PIPEANN_SRC"
if [ ! -f third_party/liburing/src/liburing.a ]; then
  (cd third_party/liburing && nice -n "$NICE" ./configure && nice -n "$NICE" make -j"$MAKE_JOBS" -C src)
fi
mkdir -p build
cd build
if [ ! -f Makefile ]; then
  ADDITIONAL_DEFINITIONS="-DDYN_PIPE_WIDTH" nice -n "$NICE" cmake ..
fi
nice -n "$NICE" make -j"$MAKE_JOBS"
for t in build_disk_index build_memory_index search_disk_index utils/gen_random_slice; do
  [ -x "tests/$t" ] || { echo "pipeann: tests/$t was not built" >&2; exit 1; }
done
echo "pipeann: built in $PIPEANN_SRC/build/tests"

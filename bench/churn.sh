#!/usr/bin/env bash
# Recall under churn (issue 8): 20 cycles of delete 5% / insert 5% / merge on
# debian-384 and on a synthetic set of another shape, each cycle beside a fresh
# build of the same live points. JSON lines in bench/out/churn-*.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example churn --bin basalt
mkdir -p bench/out
WORK=${WORK:-/tmp/basalt-churn}
CYCLES=${CYCLES:-20}
DEB=${DEB:-../shared/data/debian-384}
if [ -f "$DEB/base.fbin" ]; then
  target/release/examples/churn "$DEB/base.fbin" "$DEB/query.fbin" "$WORK/deb" 50000 "$CYCLES" 0.05 60 1 64 32 \
    > bench/out/churn-debian.jsonl 2> bench/out/churn-debian.log
fi
SYN=$WORK/syn
mkdir -p "$SYN"
[ -f "$SYN/base.fbin" ] || target/release/basalt gen --out "$SYN/base.fbin" --n 200000 --dim 96 \
  --clusters 64 --seed 7 --queries "$SYN/query.fbin" --nq 1000
target/release/examples/churn "$SYN/base.fbin" "$SYN/query.fbin" "$WORK/synw" 100000 "$CYCLES" 0.05 40 1 64 32 \
  > bench/out/churn-syn96.jsonl 2> bench/out/churn-syn96.log

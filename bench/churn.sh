#!/usr/bin/env bash
# Recall under churn (issue 8): 20 cycles of delete 5% / insert 5% / merge on
# debian-384 and on a synthetic set of another shape, each cycle beside a fresh
# build of the same live points. JSON lines in bench/out/churn-*.jsonl.
#   CYCLES=20         cycles per set
#   SETS="debian syn" which sets
#   PLACEMENT=row     row (records in row order) or packed (neighbours share
#                     sectors: the default of `basalt build` and `import`);
#                     packed runs write churn-*-packed.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example churn --bin basalt
mkdir -p bench/out
WORK=${WORK:-/tmp/basalt-churn}
CYCLES=${CYCLES:-20}
SETS=${SETS:-debian syn}
PLACEMENT=${PLACEMENT:-row}
case $PLACEMENT in
  row) SUF= ;;
  packed) SUF=-packed ;;
  *) echo "PLACEMENT=$PLACEMENT: row or packed" >&2; exit 2 ;;
esac
DEB=${DEB:-../shared/data/debian-384}
for set in $SETS; do
  case $set in
    debian)
      if [ ! -f "$DEB/base.fbin" ]; then echo "no $DEB/base.fbin: debian skipped" >&2; continue; fi
      target/release/examples/churn "$DEB/base.fbin" "$DEB/query.fbin" "$WORK/deb" 50000 "$CYCLES" 0.05 60 1 64 32 "$PLACEMENT" \
        > "bench/out/churn-debian$SUF.jsonl" 2> "bench/out/churn-debian$SUF.log"
      ;;
    syn)
      SYN=$WORK/syn
      mkdir -p "$SYN"
      [ -f "$SYN/base.fbin" ] || target/release/basalt gen --out "$SYN/base.fbin" --n 200000 --dim 96 \
        --clusters 64 --seed 7 --queries "$SYN/query.fbin" --nq 1000
      target/release/examples/churn "$SYN/base.fbin" "$SYN/query.fbin" "$WORK/synw" 100000 "$CYCLES" 0.05 40 1 64 32 "$PLACEMENT" \
        > "bench/out/churn-syn96$SUF.jsonl" 2> "bench/out/churn-syn96$SUF.log"
      ;;
    *) echo "unknown set $set (debian, syn)" >&2; exit 2 ;;
  esac
done

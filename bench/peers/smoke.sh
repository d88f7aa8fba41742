#!/usr/bin/env bash
# Tiny end-to-end check of the peer scripts (a few seconds, 2 threads):
# random 2000 x 32 float32 -> faiss exact GT -> DiskANN disk build -> L sweep -> plot.
# Everything goes to bench/out/smoke/ (git-ignored). Uses no basalt binary.
set -euo pipefail

bench="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$bench/out/smoke"
N="${N:-2000}" DIM="${DIM:-32}" NQ="${NQ:-200}" T="${T:-2}" METRIC="${METRIC:-l2}"
FAISS="$bench/.venv-faiss/bin/python"
DANN="$bench/.venv-diskann/bin/python"

bash "$bench/peers.sh"
mkdir -p "$out"

"$FAISS" -c "
import sys; sys.path.insert(0, '$bench/peers'); import binio, numpy as np
r = np.random.default_rng(7)
binio.write_vectors('$out/base.fbin', r.standard_normal(($N, $DIM)).astype(np.float32))
binio.write_vectors('$out/query.fbin', r.standard_normal(($NQ, $DIM)).astype(np.float32))
"

"$FAISS" "$bench/peers/faiss_exact.py" --base "$out/base.fbin" --queries "$out/query.fbin" \
    --k 100 --metric "$METRIC" --threads "$T" --out "$out/gt_$METRIC.ibin"

"$DANN" "$bench/peers/diskann_build.py" --data "$out/base.fbin" --metric "$METRIC" \
    --out "$out/idx_$METRIC" --R 32 --L 50 --alpha 1.2 --pq-bytes 16 --threads "$T" --force

"$DANN" "$bench/peers/diskann_search.py" --index "$out/idx_$METRIC" --queries "$out/query.fbin" \
    --gt "$out/gt_$METRIC.ibin" --k 10 --L 10,20,40,80,160 --beam 4 --threads "$T" \
    --cache-nodes 0 --latency-pass 2>"$out/search_$METRIC.log" | tee "$out/diskann_$METRIC.jsonl"

"$FAISS" "$bench/peers/plot.py" --diskann "$out/diskann_$METRIC.jsonl" \
    --out "$out/recall_qps_$METRIC.png" --title "smoke: $N x $DIM random, $METRIC"

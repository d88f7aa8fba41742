#!/usr/bin/env bash
# The partitioned build beside the in-memory build of the same data.
#
#   N=2000000 DIM=128 BUDGET_GIB=0.5 bash bench/partitioned.sh
#
# Generates N x DIM synthetic f32 (`basalt gen`, seed 1) and 1,000 queries,
# the exact ground truth, then builds the index twice with THREADS threads:
# at once (no budget) and partitioned under BUDGET_GIB (`--build-memory`);
# prints each build's time, peak RSS (the build's own VmHWM) and shards,
# then recall@10 and reads per query at fixed L for both, 1 search thread.
# SEARCH_ARGS adds search options (e.g. "--mode rounds", whose counts do
# not depend on when reads land). Writes everything under OUT (default
# /tmp/basalt-bench-partitioned) and
# one JSON line per build and per (index, L) to OUT/results.jsonl.
set -euo pipefail
N=${N:-2000000}
DIM=${DIM:-128}
BUDGET_GIB=${BUDGET_GIB:-0.5}
THREADS=${THREADS:-2}
LS=${LS:-20,40,60,80,120}
SEARCH_ARGS=${SEARCH_ARGS:-}
OUT=${OUT:-/tmp/basalt-bench-partitioned}
HERE=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$HERE/Cargo.toml" >/dev/null
B="$HERE/target/release/basalt"
mkdir -p "$OUT"
cd "$OUT"
if [ ! -f base.fbin ]; then
  "$B" gen --out base.fbin --n "$N" --dim "$DIM" --queries q.fbin --nq 1000 --seed 1
  "$B" gt --base base.fbin --queries q.fbin --k 10 --metric l2 --out gt.ibin
fi
: > results.jsonl
build() { # name, extra args...
  local name=$1
  shift
  rm -rf "$name"
  "$B" build --data base.fbin --metric l2 --out "$name" --pq-bytes 32 --seed 1 \
    --threads "$THREADS" --json "$@" 2> "$name.log" > "$name.json"
  python3 - "$name" <<'EOF' | tee -a results.jsonl
import json, sys
name = sys.argv[1]
s = json.load(open(f"{name}.json"))
p = s.get("partition") or {}
print(json.dumps({"build": name, "n": s["count"], "dim": s["dim"], "total_s": round(s["total_s"], 1),
                  "peak_rss_gib": round(s["peak_rss_bytes"] / 2**30, 3), "shards": p.get("shards"),
                  "shard_points": p.get("shard_points"), "degree_mean": s["degree_mean"],
                  "phases": {k: round(v, 1) for k, v in s["phases"]}}))
EOF
}
build one-shot
build partitioned --build-memory "$BUDGET_GIB"
for idx in one-shot partitioned; do
  # shellcheck disable=SC2086
  "$B" search --index "$idx" --queries q.fbin --gt gt.ibin --k 10 --L "$LS" --threads 1 --json $SEARCH_ARGS \
    | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(json.dumps({'index': '$idx', 'L': r['L'], 'recall': r['recall'], 'reads': r['reads_mean'], 'qps': r['qps']}))
" | tee -a results.jsonl
done

#!/usr/bin/env bash
# basalt's in-memory mode (`basalt search --in-memory`) beside hnswlib (M 16
# and 32, ef_construction 200) and faiss IndexHNSWFlat (M 32) on the same
# data, threads and queries.
#
#   bash bench/inmemory.sh                 # debian-384 and 200K x 128 synthetic
#   SETS=debian REPS=5 bash bench/inmemory.sh
#   SKIP_BUILD=1 bash bench/inmemory.sh    # search the indexes of the last run again
#
# Per set: each index is built once (build time and the builder's peak RSS
# recorded), then REPS rounds search every system in turn (interleaved, so
# a noisy minute hits all of them), each sweeping its list size (basalt's L,
# HNSW's ef) over the queries repeated QREP times (default 5). Medians of
# QPS per (system, list size) are reported; recall is
# deterministic for basalt and near it for the others. The summary gives
# QPS at recall@10 = 0.90 / 0.95 / 0.98 (linear between the two sweep
# points around it, on the median curve), the best recall reached, build
# time and RSS, and the plot puts every system on one recall-QPS chart.
# Everything goes to OUT (default /tmp/basalt-bench-inmemory); the medians
# and builds as JSON lines in OUT/<set>/results.jsonl.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
export HERE
SETS=${SETS:-"debian syn128"}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
QREP=${QREP:-5}
OUT=${OUT:-/tmp/basalt-bench-inmemory}
SYN_N=${SYN_N:-200000}
LS=${LS:-10,12,14,16,20,24,30,40,50,60,80,100,140}
EFS=${EFS:-10,12,14,16,20,24,30,40,50,60,80,100,140,200}
# basalt is built at each R of BASALT_RS: 32 is the degree of hnswlib M16's
# base layer (2M links), 64 the disk default.
BASALT_RS=${BASALT_RS:-"32 64"}
# basalt's in-memory steering: sq8 (8-bit rows, the pool rescored exactly;
# the default) and exact, each a curve (basalt-mem-<steer>-R<r>).
STEERS=${STEERS:-"sq8 exact"}; BUILD_L=${BUILD_L:-100}; ALPHA=${ALPHA:-1.2}; PQ=${PQ:-32}
cargo build --release --manifest-path "$HERE/Cargo.toml" >/dev/null
B="$HERE/target/release/basalt"
bash "$HERE/bench/peers.sh" >/dev/null
PY="$HERE/bench/.venv-faiss/bin/python"
HB="$HERE/bench/peers/hnsw_bench.py"
DEB="$HERE/../shared/data/debian-384"
log() { echo "[inmemory $(date +%H:%M:%S)] $*" >&2; }

run_set() { # name base queries gt metric
  local name=$1 base=$2 queries=$3 gt=$4 metric=$5
  local dir="$OUT/$name"
  mkdir -p "$dir"
  # Each timed pass runs the queries QREP times over (a 1,000-query pass
  # lasts 25-40 ms at these rates, too short to time on a shared box).
  "$PY" - "$queries" "$gt" "$dir/queries-x$QREP" "$dir/gt-x$QREP.ibin" "$QREP" <<'PYEOF'
import os, sys
import numpy as np
sys.path.insert(0, os.path.join(os.environ["HERE"], "bench", "peers"))
import binio
q, gt, qout, gtout, rep = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
x = np.asarray(binio.read_vectors(q, mmap=False))
binio.write_vectors(qout + os.path.splitext(q)[1], np.tile(x, (rep, 1)))
ids, scores = binio.read_gt(gt)
if scores is None:
    raise SystemExit(f"{gt}: no scores (recall needs them for ties)")
binio.write_gt(gtout, np.tile(ids, (rep, 1)), np.tile(scores, (rep, 1)))
PYEOF
    queries="$dir/queries-x$QREP.${3##*.}"
  gt="$dir/gt-x$QREP.ibin"
  if [[ -n "${SKIP_BUILD:-}" && -s "$dir/builds.jsonl" ]]; then
    log "$name: reusing the built indexes (SKIP_BUILD)"
  else
  : > "$dir/builds.jsonl"
  for r in $BASALT_RS; do
    log "$name: basalt build, R $r"
    "$B" build --data "$base" --metric "$metric" --out "$dir/basalt-R$r" --R "$r" --L "$BUILD_L" \
      --alpha "$ALPHA" --pq-bytes "$PQ" --threads "$THREADS" --seed 1 --force --json \
      2> "$dir/basalt-R$r.build.log" > "$dir/basalt-R$r.build.json"
    "$PY" -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps({"system": sys.argv[2], "build_s": s["total_s"],
                  "peak_rss_mb": s["peak_rss_bytes"] / 2**20}))
' "$dir/basalt-R$r.build.json" "basalt-R$r" >> "$dir/builds.jsonl"
  done
  for sys in hnswlib:16 hnswlib:32 faiss:32; do
    local lib=${sys%%:*} m=${sys##*:}
    log "$name: $lib M$m build"
    "$PY" "$HB" build --lib "$lib" --M "$m" --ef-construction 200 --data "$base" --metric "$metric" \
      --threads "$THREADS" --out "$dir/$lib-M$m.index" \
      | "$PY" -c 'import json,sys; d=json.loads(sys.stdin.read()); d["system"]=sys.argv[1]; print(json.dumps(d))' \
        "$lib-M$m" >> "$dir/builds.jsonl"
  done
  fi
  : > "$dir/search.jsonl"
  for rep in $(seq "$REPS"); do
    log "$name: search rep $rep"
    for r in $BASALT_RS; do
      for steer in $STEERS; do
      "$B" search --index "$dir/basalt-R$r" --queries "$queries" --gt "$gt" --k 10 --L "$LS" \
        --threads "$THREADS" --in-memory --in-memory-steer "$steer" --json 2>> "$dir/basalt_search.log" \
        | "$PY" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(json.dumps({"system": sys.argv[2], "rep": int(sys.argv[1]), "L": r["L"], "recall": r["recall"],
                      "qps": r["qps"], "peak_rss_mb": (r.get("peak_rss_bytes") or 0) / 2**20,
                      "hops": r["hops_mean"]}))
' "$rep" "basalt-mem-$steer-R$r" >> "$dir/search.jsonl"
      done
    done
    for sys in hnswlib:16 hnswlib:32 faiss:32; do
      local lib=${sys%%:*} m=${sys##*:}
      "$PY" "$HB" search --lib "$lib" --M "$m" --index "$dir/$lib-M$m.index" --data "$base" \
        --metric "$metric" --queries "$queries" --gt "$gt" --k 10 --ef "$EFS" --threads "$THREADS" \
        | "$PY" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    r["system"] = sys.argv[1]; r["rep"] = int(sys.argv[2])
    print(json.dumps(r))
' "$lib-M$m" "$rep" >> "$dir/search.jsonl"
    done
  done
  "$PY" "$HERE/bench/inmemory_report.py" "$dir" "$name" "$THREADS"
}

for s in $SETS; do
  case $s in
    debian)
      run_set debian384 "$DEB/base.fbin" "$DEB/query.fbin" "$DEB/gt.ibin" l2 ;;
    syn128)
      d="$OUT/data-syn128"
      mkdir -p "$d"
      if [ ! -f "$d/gt.ibin" ]; then
        "$B" gen --out "$d/base.fbin" --n "$SYN_N" --dim 128 --queries "$d/q.fbin" --nq 1000 --seed 1
        "$B" gt --base "$d/base.fbin" --queries "$d/q.fbin" --k 100 --metric l2 --out "$d/gt.ibin"
      fi
      run_set "syn128-$SYN_N" "$d/base.fbin" "$d/q.fbin" "$d/gt.ibin" l2 ;;
    *) echo "unknown set $s (debian, syn128)" >&2; exit 2 ;;
  esac
done

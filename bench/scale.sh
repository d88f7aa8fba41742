#!/usr/bin/env bash
# Issue 12's scale run: basalt's partitioned build under a memory budget
# beside DiskANN's partitioned build under the same budget, on the same
# data in the same run, and beside basalt's in-memory build of that data.
#
#   N=10000000 DIM=128 BUDGET_GIB=2 R=32 L=64 OUT=/work/tmp/scale bash bench/scale.sh
#
# Steps (STEPS, in this order; each is skipped when its output exists, so a
# run that was stopped picks up where it was; delete OUT/<step> to redo one):
#   data      `basalt gen` N x DIM f32 (seed 1) + 1,000 queries, exact ground truth
#   basalt    `basalt build --build-memory BUDGET_GIB` (the partitioned build)
#   diskann   diskannpy 0.7.0 build_disk_index, build_memory_maximum BUDGET_GIB
#   oneshot   `basalt build` in memory (no budget: it needs several times it)
#   search    every index built: recall@10, node reads per query, QPS and the
#             search process's peak RSS at each L in LS, 1 thread, W 4 in
#             rounds (DiskANN's beam search), no cache
# Builds use THREADS threads, R, L, PQ_BYTES; basalt's builds run one
# insertion pass with alpha 1.2 (`--passes 1`), as DiskANN's disk build
# does. Each build's time and peak RSS (wait4's ru_maxrss of the build
# process) go to OUT/results.jsonl, one JSON line per build and per
# (index, L).
set -euo pipefail
N=${N:-10000000}
DIM=${DIM:-128}
BUDGET_GIB=${BUDGET_GIB:-2}
R=${R:-32}
L=${L:-64}
PQ_BYTES=${PQ_BYTES:-32}
THREADS=${THREADS:-2}
LS=${LS:-20,40,60,80,120,160}
STEPS=${STEPS:-data basalt diskann oneshot search}
OUT=${OUT:-/tmp/basalt-bench-scale}
HERE=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --manifest-path "$HERE/Cargo.toml" >/dev/null
B="$HERE/target/release/basalt"
DPY="$HERE/bench/.venv-diskann/bin/python"
mkdir -p "$OUT"
cd "$OUT"
touch results.jsonl
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# Runs a command with its stdout in OUT and its stderr in ERR and prints a
# JSON object with its wall time and peak RSS (the child's ru_maxrss).
measured() { # out, err, command...
  python3 - "$@" <<'EOF'
import json, os, subprocess, sys, time
out, err, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.perf_counter()
with open(out, "w") as o, open(err, "w") as e:
    p = subprocess.Popen(cmd, stdout=o, stderr=e)
    _, status, ru = os.wait4(p.pid, 0)
code = os.waitstatus_to_exitcode(status)
print(json.dumps({"wall_s": round(time.perf_counter() - t0, 1),
                  "peak_rss_gib": round(ru.ru_maxrss / 2**20, 3), "exit": code}))
sys.exit(1 if code else 0)
EOF
}

basalt_build() { # name, extra args...
  local name=$1
  shift
  [ -f "$name.json" ] && { log "$name: built already"; return; }
  rm -rf "$name"
  log "$name: building"
  local m
  m=$(measured "$name.json.part" "$name.log" "$B" build --data base.fbin --metric l2 --out "$name" --R "$R" --L "$L" \
    --passes 1 --pq-bytes "$PQ_BYTES" --seed 1 --threads "$THREADS" --json "$@") \
    || { tail -20 "$name.log" >&2; exit 1; }
  mv "$name.json.part" "$name.json"
  python3 - "$name" "$m" <<'EOF' | tee -a results.jsonl
import json, sys
name, m = sys.argv[1], json.loads(sys.argv[2])
s = json.load(open(f"{name}.json"))
p = s.get("partition") or {}
print(json.dumps({"build": name, "n": s["count"], "dim": s["dim"], "wall_s": m["wall_s"],
                  "total_s": round(s["total_s"], 1), "peak_rss_gib": m["peak_rss_gib"],
                  "vmhwm_gib": round(s["peak_rss_bytes"] / 2**30, 3), "shards": p.get("shards"),
                  "shard_points": p.get("shard_points"), "degree_mean": s["degree_mean"],
                  "phases": {k: round(v, 1) for k, v in s["phases"]}}))
EOF
}

# One results line per L of search-INDEX.jsonl (keys that `basalt search
# --json` and diskann_search.py share), with the search's peak RSS.
search_rows() { # index, measured JSON
  python3 - "$1" "$2" <<'EOF' | tee -a results.jsonl
import json, sys
idx, m = sys.argv[1], json.loads(sys.argv[2])
for line in open(f"search-{idx}.jsonl"):
    if line.startswith("{"):
        r = json.loads(line)
        print(json.dumps({"index": idx, "L": r["L"], "recall": r["recall"], "reads": r["reads_mean"],
                          "qps": r["qps"], "latency_us_mean": r["latency_us_mean"],
                          "search_peak_rss_gib": m["peak_rss_gib"]}))
EOF
}

for step in $STEPS; do
  case $step in
    data)
      if [ ! -f gt.ibin ]; then
        log "data: $N x $DIM"
        "$B" gen --out base.fbin --n "$N" --dim "$DIM" --queries q.fbin --nq 1000 --seed 1
        "$B" gt --base base.fbin --queries q.fbin --k 10 --metric l2 --out gt.part.ibin
        mv gt.part.ibin gt.ibin
      fi ;;
    basalt) basalt_build partitioned --build-memory "$BUDGET_GIB" ;;
    oneshot) basalt_build one-shot ;;
    diskann)
      if [ ! -f diskann/peer_build.json ]; then
        [ -x "$DPY" ] || bash "$HERE/bench/peers.sh"
        log "diskann: building"
        "$DPY" "$HERE/bench/peers/diskann_build.py" --data base.fbin --metric l2 --out diskann --force \
          --R "$R" --L "$L" --pq-bytes "$PQ_BYTES" --threads "$THREADS" \
          --build-memory-gb "$BUDGET_GIB" --partitioned > diskann.build.json
        python3 - <<'EOF' | tee -a results.jsonl
import json, re
r = json.load(open("diskann/peer_build.json"))
log = open(r["log"], errors="replace").read()
m = re.search(r"across (\d+) shards", log)
sizes = re.search(r"Actual shard sizes: ([0-9 ]+)", log)
print(json.dumps({"build": "diskann", "n": r["n"], "dim": r["dim"], "wall_s": r["wall_s"],
                  "total_s": r["build_s"], "peak_rss_gib": round(r["peak_rss_mb"] / 1024, 3),
                  "build_memory_maximum_gb": r["build_memory_maximum_gb"], "one_shot": r["one_shot"],
                  "rss_before_build_gib": round(r["rss_before_build_mb"] / 1024, 3),
                  "shards": int(m.group(1)) if m else None,
                  "shard_points": [int(x) for x in sizes.group(1).split()] if sizes else None}))
EOF
      fi ;;
    search)
      for idx in partitioned one-shot; do
        [ -f "$idx.json" ] || continue
        log "search: $idx"
        m=$(measured "search-$idx.jsonl" "search-$idx.log" "$B" search --index "$idx" --queries q.fbin --gt gt.ibin --k 10 \
          --L "$LS" --threads 1 --beam 4 --mode rounds --json)
        search_rows "$idx" "$m"
      done
      if [ -f diskann/peer_build.json ]; then
        log "search: diskann"
        m=$(measured search-diskann.jsonl search-diskann.log "$DPY" "$HERE/bench/peers/diskann_search.py" --index diskann \
          --queries q.fbin --gt gt.ibin --k 10 --L "$LS" --beam 4 --threads 1 --cache-nodes 0)
        search_rows diskann "$m"
      fi ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
log "done: $OUT/results.jsonl"

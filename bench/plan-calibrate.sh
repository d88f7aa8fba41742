#!/usr/bin/env bash
# Refreshes the measurements `basalt plan` models from (src/plan/calibration.json):
#
#   bash bench/plan-calibrate.sh            # ~30 min on a 2-core box
#
# On this machine, with THREADS build threads and 1 search thread, O_DIRECT:
#   - seeded synthetic f32 sets (`basalt gen`) of SETS ("dim:n[:dtype]" each),
#     each built with R 64, L 100, PQ 32 bytes (the defaults) and searched at a
#     sweep of L with no entry cache (the daemon's default): recall@10, sector
#     reads, rounds, CPU and I/O time per query;
#   - the first set again with PQ_SWEEP bytes (recall at a fixed read budget
#     against the RAM the codes take);
#   - the largest f32 set of the first dimension built partitioned in 4 shards
#     (the partitioned build's time against the in-memory one);
#   - REAL (default ../shared/data/debian-384, skipped when absent), real data
#     beside the synthetic, with REAL_PQ_SWEEP bytes, and its first
#     REAL_FRACTIONS of rows (how reads grow with N on real data);
#   - CHECK ("dim:n"), a larger set that is measured but not fitted: `basalt
#     plan`'s prediction for it is compared with what it measured (bench/README);
#   - the device: random 4 KiB O_DIRECT reads at depth 1 and at depth 32.
# Writes OUT/calibration.json and, with INSTALL=1 (the default), copies it to
# src/plan/calibration.json (rebuild basalt to use it). REUSE=1 keeps the
# sets already measured in OUT (only new ones are built).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
THREADS=${THREADS:-2}
SETS=${SETS:-"128:100000 128:300000 384:100000 128:200000:u8"}
PQ_SWEEP=${PQ_SWEEP:-"8 16 64"}
CHECK=${CHECK:-"128:1000000"}
REAL=${REAL:-$HERE/../shared/data/debian-384}
REAL_FRACTIONS=${REAL_FRACTIONS:-"0.25 0.5"}
REAL_PQ_SWEEP=${REAL_PQ_SWEEP:-"16 96"}
LS=${LS:-10,15,20,30,40,50,60,80,100,120,160,200,250,300,400}
NQ=${NQ:-500}
OUT=${OUT:-/tmp/basalt-plan-calibrate}
INSTALL=${INSTALL:-1}
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
B="$HERE/target/release/basalt"
mkdir -p "$OUT"
cd "$OUT"
: > points.jsonl
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# One build and its search sweep; appends a "build" and the "search" lines.
# With REUSE=1 a set whose build and search files are there is not measured
# again (its lines are written from them).
# Args: name role family data queries gt dim n dtype pq [extra build args...]
measure() {
  local name=$1 role=$2 family=$3 data=$4 q=$5 gt=$6 dim=$7 n=$8 dtype=$9 pq=${10}
  shift 10
  if [ "${REUSE:-0}" = 1 ] && [ -s "build-$name.json" ] && [ -s "search-$name.jsonl" ]; then
    log "reuse $name"
  else
    log "build $name ($role)"
    rm -rf "idx-$name"
    "$B" build --data "$data" --metric l2 --out "idx-$name" --pq-bytes "$pq" --seed 1 \
      --threads "$THREADS" --json "$@" 2> "build-$name.log" > "build-$name.json"
    log "search $name"
    "$B" search --index "idx-$name" --queries "$q" --gt "$gt" --k 10 --L "$LS" --threads 1 \
      --cache-nodes 0 --json 2> "search-$name.log" > "search-$name.jsonl"
  fi
  python3 - "$name" "$role" "$family" "$dim" "$n" "$dtype" "$pq" "$THREADS" <<'EOF' >> points.jsonl
import json, sys
name, role, family, dim, n, dtype, pq, threads = sys.argv[1:]
s = json.load(open(f"build-{name}.json"))
phases = dict(s["phases"])
graph = sum(v for k, v in phases.items() if k in ("load", "graph", "shard graphs", "merge", "connect"))
p = s.get("partition")
print(json.dumps({"kind": "build", "set": name, "role": role, "family": family, "n": int(n), "dim": int(dim),
                  "dtype": dtype, "pq_bytes": int(pq), "threads": int(threads),
                  "graph_s": round(graph, 2), "total_s": round(s["total_s"], 2),
                  "peak_rss_bytes": s["peak_rss_bytes"], "shards": p["shards"] if p else None}))
for line in open(f"search-{name}.jsonl"):
    r = json.loads(line)
    print(json.dumps({"kind": "search", "set": name, "role": role, "family": family, "n": int(n), "dim": int(dim),
                      "dtype": dtype, "pq_bytes": int(pq), "L": r["L"], "recall": round(r["recall"], 4),
                      "reads": round(r["reads_mean"], 2), "rounds": round(r["hops_mean"], 2),
                      "cpu_us": round(r["cpu_us_mean"], 1), "io_us": round(r["io_us_mean"], 1),
                      "latency_us": round(r["latency_us_mean"], 1)}))
EOF
}

ext() { case $1 in f32) echo fbin ;; u8) echo u8bin ;; i8) echo i8bin ;; esac; }
synth() { # spec role
  local spec=$1 role=$2 dim n dtype
  IFS=: read -r dim n dtype <<< "$spec"
  dtype=${dtype:-f32}
  local name="${dtype}-${dim}-${n}" e
  e=$(ext "$dtype")
  if [ ! -f "$name.$e" ]; then
    log "gen $name"
    "$B" gen --out "$name.$e" --n "$n" --dim "$dim" --dtype "$dtype" --queries "$name-q.$e" \
      --nq "$NQ" --seed 7 2> /dev/null
    "$B" gt --base "$name.$e" --queries "$name-q.$e" --k 10 --metric l2 --out "$name-gt.ibin" 2> /dev/null
  fi
  echo "$name synthetic-$dtype-$dim $name.$e $name-q.$e $name-gt.ibin $dim $n $dtype"
}

# The first n rows of a .fbin, and their ground truth for the queries.
subset() { # src queries n out
  python3 - "$1" "$3" "$4" <<'EOF'
import struct, sys
src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(src, "rb") as f:
    rows, dim = struct.unpack("<2i", f.read(8))
    assert n <= rows, f"{n} > {rows} rows"
    with open(out, "wb") as o:
        o.write(struct.pack("<2i", n, dim))
        left = n * dim * 4
        while left:
            b = f.read(min(left, 1 << 24))
            o.write(b)
            left -= len(b)
EOF
  "$B" gt --base "$4" --queries "$2" --k 10 --metric l2 --out "$4.gt.ibin" 2> /dev/null
}

first=""
biggest=""
for spec in $SETS; do
  read -r name fam data q gt dim n dtype <<< "$(synth "$spec" fit)"
  measure "$name" fit "$fam" "$data" "$q" "$gt" "$dim" "$n" "$dtype" 32
  [ -z "$first" ] && first="$name $fam $data $q $gt $dim $n $dtype"
  read -r _ _ _ _ _ fdim _ <<< "$first"
  if [ "$dtype" = f32 ] && [ "$dim" = "$fdim" ]; then biggest="$name $fam $data $q $gt $dim $n $dtype"; fi
done
read -r name fam data q gt dim n dtype <<< "$first"
for pq in $PQ_SWEEP; do
  measure "$name-pq$pq" pq "$fam" "$data" "$q" "$gt" "$dim" "$n" "$dtype" "$pq"
done
read -r name fam data q gt dim n dtype <<< "$biggest"
measure "$name-shards4" partitioned "$fam" "$data" "$q" "$gt" "$dim" "$n" "$dtype" 32 --shards 4
if [ -f "$REAL/base.fbin" ]; then
  dim=$(python3 -c "import struct;f=open('$REAL/base.fbin','rb');print(struct.unpack('<2i',f.read(8))[1])")
  n=$(python3 -c "import struct;f=open('$REAL/base.fbin','rb');print(struct.unpack('<2i',f.read(8))[0])")
  fam="real-$(basename "$REAL")"
  measure "$fam" real "$fam" "$REAL/base.fbin" "$REAL/query.fbin" "$REAL/gt.ibin" "$dim" "$n" f32 32
  # PQ sizes on real data (the plan reads a profile's own family's sweep).
  for pq in $REAL_PQ_SWEEP; do
    measure "$fam-pq$pq" pq "$fam" "$REAL/base.fbin" "$REAL/query.fbin" "$REAL/gt.ibin" "$dim" "$n" f32 "$pq"
  done
  # How reads grow with N on real data: the same set's first rows.
  for frac in $REAL_FRACTIONS; do
    m=$(python3 -c "print(int($n * $frac))")
    [ -f "$fam-$m.fbin" ] || subset "$REAL/base.fbin" "$REAL/query.fbin" "$m" "$fam-$m.fbin"
    measure "$fam-$m" growth "$fam" "$fam-$m.fbin" "$REAL/query.fbin" "$fam-$m.fbin.gt.ibin" "$dim" "$m" f32 32
  done
fi
for spec in $CHECK; do
  read -r name fam data q gt dim n dtype <<< "$(synth "$spec" check)"
  measure "$name" check "$fam" "$data" "$q" "$gt" "$dim" "$n" "$dtype" 32
done

log "device"
python3 - <<'EOF' >> points.jsonl
# Random 4 KiB O_DIRECT reads of a 1 GiB file: depth 1 (one thread) and
# depth 32 (32 threads; pread releases the GIL), 3 s each.
import json, mmap, os, random, threading, time
path = "device-probe.bin"
size = 1 << 30
if not os.path.exists(path) or os.path.getsize(path) != size:
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
def run(threads, seconds=3.0):
    counts = [0] * threads
    stop = time.monotonic() + seconds
    def worker(i):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        rng = random.Random(i)
        n = 0
        while time.monotonic() < stop:
            os.preadv(fd, [buf], rng.randrange(size >> 12) << 12)
            n += 1
        counts[i] = n
        os.close(fd)
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t = time.monotonic()
    for x in ts: x.start()
    for x in ts: x.join()
    return sum(counts) / (time.monotonic() - t)
qd1 = run(1)
qd32 = run(32)
print(json.dumps({"kind": "device", "iops_qd1": round(qd1), "iops_qd32": round(qd32),
                  "read_latency_us_qd1": round(1e6 / qd1, 1)}))
EOF

python3 - "$THREADS" <<'EOF' > calibration.json
import json, sys, datetime, platform
points = [json.loads(l) for l in open("points.jsonl")]
device = next(p for p in points if p["kind"] == "device")
out = {
    "measured": datetime.date.today().isoformat(),
    "command": "bash bench/plan-calibrate.sh",
    "machine": {"cores": __import__("os").cpu_count(), "kernel": platform.release()},
    "build_threads": int(sys.argv[1]),
    "search_threads": 1,
    "entry_cache": 0,
    "device": {k: v for k, v in device.items() if k != "kind"},
    "builds": [{k: v for k, v in p.items() if k != "kind"} for p in points if p["kind"] == "build"],
    "searches": [{k: v for k, v in p.items() if k != "kind"} for p in points if p["kind"] == "search"],
}
json.dump(out, sys.stdout, indent=1)
print()
EOF
log "wrote $OUT/calibration.json"
if [ "$INSTALL" = 1 ]; then
  cp calibration.json "$HERE/src/plan/calibration.json"
  log "installed in src/plan/calibration.json"
fi

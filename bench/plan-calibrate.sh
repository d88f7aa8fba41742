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
# sets already measured in OUT with the same parameters (only new or changed
# ones are built): each step writes a stamp of its parameters once it has
# completed, and a step is reused only when its stamp matches (a step cut
# short has none). Generated and subset data are kept whenever their stamp
# matches, REUSE or not (the same parameters make the same files).
set -euo pipefail
# Failures inside $(...) stop the script too.
shopt -s inherit_errexit
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
die() { log "FAILED: $*"; exit 1; }

# Stamps: FILE.stamp holds the parameters FILE was made with, written after
# the step that made it completed.
stamp_matches() { # file params
  [ -f "$1.stamp" ] && [ "$(cat "$1.stamp")" = "$2" ]
}
stamp_write() { # file params
  printf '%s' "$2" > "$1.stamp"
}
# What identifies an input file: its size and modification time.
file_id() { stat -c '%s:%Y' "$@" | tr '\n' ' '; }

# One build and its search sweep; appends a "build" and the "search" lines.
# With REUSE=1 a set measured before with the same parameters (its stamp) is
# not measured again (its lines are written from its files).
# Args: name role family data queries gt dim n dtype pq [extra build args...]
measure() {
  local name=$1 role=$2 family=$3 data=$4 q=$5 gt=$6 dim=$7 n=$8 dtype=$9 pq=${10}
  shift 10
  local params
  params="build --data $data ($(file_id "$data" "$q" "$gt")) --pq-bytes $pq --threads $THREADS $*; search --queries $q --gt $gt --L $LS"
  if [ "${REUSE:-0}" = 1 ] && [ -s "build-$name.json" ] && [ -s "search-$name.jsonl" ] &&
    stamp_matches "search-$name.jsonl" "$params"; then
    log "reuse $name"
  else
    rm -f "search-$name.jsonl.stamp"
    log "build $name ($role)"
    rm -rf "idx-$name"
    "$B" build --data "$data" --metric l2 --out "idx-$name" --pq-bytes "$pq" --seed 1 \
      --threads "$THREADS" --json "$@" 2> "build-$name.log" > "build-$name.json" ||
      die "build $name: see $OUT/build-$name.log"
    log "search $name"
    "$B" search --index "idx-$name" --queries "$q" --gt "$gt" --k 10 --L "$LS" --threads 1 \
      --cache-nodes 0 --json 2> "search-$name.log" > "search-$name.jsonl" ||
      die "search $name: see $OUT/search-$name.log"
    stamp_write "search-$name.jsonl" "$params"
  fi
  local args=("$name" "$role" "$family" "$dim" "$n" "$dtype" "$pq" "$THREADS")
  python3 - "${args[@]}" <<'EOF' >> points.jsonl || die "the results of $name do not read"
import json, sys
name, role, family, dim, n, dtype, pq, threads = sys.argv[1:]
s = json.load(open(f"build-{name}.json"))
phases = dict(s["phases"])
graph = sum(v for k, v in phases.items() if k in ("load", "graph", "shard graphs", "merge", "connect"))
p = s.get("partition")
print(json.dumps({"kind": "build", "set": name, "role": role, "family": family, "n": int(n), "dim": int(dim),
                  "dtype": dtype, "pq_bytes": int(pq), "threads": int(threads),
                  "graph_s": round(graph, 2), "total_s": round(s["total_s"], 2),
                  "peak_rss_bytes": s["peak_rss_bytes"], "shards": p["shards"] if p else None,
                  "copies_per_point": round(sum(p["shard_points"]) / int(n), 4) if p else None}))
for line in open(f"search-{name}.jsonl"):
    r = json.loads(line)
    print(json.dumps({"kind": "search", "set": name, "role": role, "family": family, "n": int(n), "dim": int(dim),
                      "dtype": dtype, "pq_bytes": int(pq), "L": r["L"], "recall": round(r["recall"], 4),
                      "reads": round(r["reads_mean"], 2), "rounds": round(r["hops_mean"], 2),
                      "cpu_us": round(r["cpu_us_mean"], 1), "io_us": round(r["io_us_mean"], 1),
                      "latency_us": round(r["latency_us_mean"], 1)}))
EOF
}

ext() {
  case $1 in
    f32) echo fbin ;;
    u8) echo u8bin ;;
    i8) echo i8bin ;;
    *) die "dtype $1 is not f32, u8 or i8" ;;
  esac
}
# Generates a synthetic set (once per parameters) and prints its fields:
# name family data queries gt dim n dtype. Run inside $(...): its logs go
# to stderr and files, and a failure stops the script.
synth() { # spec
  local spec=$1 dim n dtype
  IFS=: read -r dim n dtype <<< "$spec"
  dtype=${dtype:-f32}
  [[ "$dim" =~ ^[0-9]+$ && "$n" =~ ^[0-9]+$ ]] || die "set spec $spec is not dim:n[:dtype]"
  local name="${dtype}-${dim}-${n}" e
  e=$(ext "$dtype")
  local params="gen --n $n --dim $dim --dtype $dtype --nq $NQ --seed 7; gt --k 10 --metric l2"
  if ! { [ -f "$name.$e" ] && [ -f "$name-q.$e" ] && stamp_matches "$name-gt.ibin" "$params"; }; then
    rm -f "$name-gt.ibin.stamp"
    log "gen $name"
    "$B" gen --out "$name.$e" --n "$n" --dim "$dim" --dtype "$dtype" --queries "$name-q.$e" \
      --nq "$NQ" --seed 7 2> "gen-$name.log" || die "gen $name: see $OUT/gen-$name.log"
    "$B" gt --base "$name.$e" --queries "$name-q.$e" --k 10 --metric l2 --out "$name-gt.ibin" \
      2> "gt-$name.log" || die "gt $name: see $OUT/gt-$name.log"
    stamp_write "$name-gt.ibin" "$params"
  fi
  echo "$name synthetic-$dtype-$dim $name.$e $name-q.$e $name-gt.ibin $dim $n $dtype"
}

# Rows and dimension of a .fbin (the path goes to Python as an argument).
fbin_shape() { # path
  python3 - "$1" <<'EOF'
import struct, sys
with open(sys.argv[1], "rb") as f:
    rows, dim = struct.unpack("<2i", f.read(8))
print(rows, dim)
EOF
}

# The first n rows of a .fbin, and their ground truth for the queries
# (once per parameters).
subset() { # src queries n out
  local params
  params="first $3 rows of $1 ($(file_id "$1" "$2")); gt --k 10 --metric l2"
  if [ -f "$4" ] && stamp_matches "$4.gt.ibin" "$params"; then
    return
  fi
  rm -f "$4.gt.ibin.stamp"
  log "subset $4"
  python3 - "$1" "$3" "$4" <<'EOF' || die "subset $4 of $1"
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
  "$B" gt --base "$4" --queries "$2" --k 10 --metric l2 --out "$4.gt.ibin" 2> "$4.gt.log" ||
    die "gt of $4: see $OUT/$4.gt.log"
  stamp_write "$4.gt.ibin" "$params"
}

first=""
biggest=""
biggest_n=0
for spec in $SETS; do
  line=$(synth "$spec") || die "set $spec"
  read -r name fam data q gt dim n dtype <<< "$line"
  measure "$name" fit "$fam" "$data" "$q" "$gt" "$dim" "$n" "$dtype" 32
  [ -z "$first" ] && first=$line
  read -r _ _ _ _ _ fdim _ <<< "$first"
  # The partitioned run takes the largest f32 set of the first dimension.
  if [ "$dtype" = f32 ] && [ "$dim" = "$fdim" ] && [ "$n" -gt "$biggest_n" ]; then
    biggest=$line
    biggest_n=$n
  fi
done
[ -n "$biggest" ] || die "SETS has no f32 set of the first set's dimension to build partitioned"
read -r name fam data q gt dim n dtype <<< "$first"
for pq in $PQ_SWEEP; do
  measure "$name-pq$pq" pq "$fam" "$data" "$q" "$gt" "$dim" "$n" "$dtype" "$pq"
done
read -r name fam data q gt dim n dtype <<< "$biggest"
measure "$name-shards4" partitioned "$fam" "$data" "$q" "$gt" "$dim" "$n" "$dtype" 32 --shards 4
if [ -f "$REAL/base.fbin" ]; then
  shape=$(fbin_shape "$REAL/base.fbin") || die "header of $REAL/base.fbin"
  read -r n dim <<< "$shape"
  fam="real-$(basename "$REAL")"
  measure "$fam" real "$fam" "$REAL/base.fbin" "$REAL/query.fbin" "$REAL/gt.ibin" "$dim" "$n" f32 32
  # PQ sizes on real data (the plan reads a profile's own family's sweep).
  for pq in $REAL_PQ_SWEEP; do
    measure "$fam-pq$pq" pq "$fam" "$REAL/base.fbin" "$REAL/query.fbin" "$REAL/gt.ibin" "$dim" "$n" f32 "$pq"
  done
  # How reads grow with N on real data: the same set's first rows.
  for frac in $REAL_FRACTIONS; do
    m=$(python3 -c 'import sys; print(int(int(sys.argv[1]) * float(sys.argv[2])))' "$n" "$frac") ||
      die "REAL_FRACTIONS: $frac is not a number"
    subset "$REAL/base.fbin" "$REAL/query.fbin" "$m" "$fam-$m.fbin"
    measure "$fam-$m" growth "$fam" "$fam-$m.fbin" "$REAL/query.fbin" "$fam-$m.fbin.gt.ibin" "$dim" "$m" f32 32
  done
fi
for spec in $CHECK; do
  line=$(synth "$spec") || die "check set $spec"
  read -r name fam data q gt dim n dtype <<< "$line"
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

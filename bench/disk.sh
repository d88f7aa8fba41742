#!/usr/bin/env bash
# Issue 13's disk-mode comparison, one run: basalt's pipelined search
# (default) and its round-based beam search against Microsoft DiskANN
# (diskannpy 0.7.0) on the same data, same build parameters (R 64, L 100,
# alpha 1.2, 32 PQ bytes), same cache (CACHE nodes: basalt's hot list,
# DiskANN's sample-query cache), O_DIRECT on both; each at 1 search thread
# (latency) and 2 (QPS), repetitions interleaved (every system once per
# rep), medians reported by bench/disk_report.py: QPS, mean latency and
# reads at recall@10 0.90 / 0.95 / 0.98, the best recall, and the ratios.
# basalt is built with `basalt build`'s default placement (packed: graph
# neighbours share sectors, every record of a read sector used); for a
# packed index its CACHE nodes are whole sectors (about the same bytes).
#
#   bash bench/disk.sh                      # debian-384
#   SETS="debian syn1m u8" bash bench/disk.sh
#
# Knobs: SETS (debian, syn1m: 1M x 128 f32 synthetic, u8: 500K x 128 u8,
# docs: the held-out docs-384 set in DOCS, default /work/data/docs-384),
# REPS (3), LS (the L sweep), CACHE (10000), PIPE_W ("8 4": the pipelined
# search's largest widths to run; the first is the one compared),
# INTERLEAVE ("4 8": queries in flight a thread for the throughput runs,
# `basalt search --interleave`, 2 threads only, first width of PIPE_W;
# INTERLEAVE="" runs none), DISKANN_W ("4 8 16": DiskANN's beam widths),
# OUT (bench/out/disk), SKIP_BUILD=1 (reuse).
# ~25 min for debian on a 2-core box (builds ~5 min).
set -euo pipefail
cd "$(dirname "$0")/.."
SETS=${SETS:-debian}
REPS=${REPS:-3}
LS=${LS:-10,20,30,40,50,60,80,100,140,200}
CACHE=${CACHE:-10000}
PIPE_W=${PIPE_W:-8 4}
INTERLEAVE=${INTERLEAVE-4 8}
DISKANN_W=${DISKANN_W:-4 8 16}
R=64; BUILD_L=100; ALPHA=1.2; PQ=32
OUT=${OUT:-bench/out/disk}
DEB=../shared/data/debian-384
DOCS=${DOCS:-/work/data/docs-384}
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }

cargo build --release --quiet
BASALT=./target/release/basalt
bash bench/peers.sh > "$OUT/peers_versions.txt" 2>&1
DPY=bench/.venv-diskann/bin/python
FPY=bench/.venv-faiss/bin/python

# one SET: prints "data queries gt metric"
dataset() {
  case $1 in
    debian) echo "$DEB/base.fbin $DEB/query.fbin $DEB/gt.ibin l2" ;;
    syn1m)
      local d=$OUT/data-syn1m
      if [[ ! -f $d/gt.ibin ]]; then
        mkdir -p "$d"
        $BASALT gen --out $d/base.fbin --n 1000000 --dim 128 --clusters 64 --seed 7 --queries $d/q.fbin --nq 1000 >&2
        $BASALT gt --base $d/base.fbin --queries $d/q.fbin --k 100 --metric l2 --threads 2 --out $d/gt.ibin > /dev/null
      fi
      echo "$d/base.fbin $d/q.fbin $d/gt.ibin l2" ;;
    u8)
      local d=$OUT/data-u8
      if [[ ! -f $d/gt.ibin ]]; then
        mkdir -p "$d"
        $BASALT gen --out $d/base.u8bin --n 500000 --dim 128 --dtype u8 --clusters 64 --seed 11 --queries $d/q.u8bin --nq 1000 >&2
        $BASALT gt --base $d/base.u8bin --queries $d/q.u8bin --k 100 --metric l2 --threads 2 --out $d/gt.ibin > /dev/null
      fi
      echo "$d/base.u8bin $d/q.u8bin $d/gt.ibin l2" ;;
    docs)
      # The held-out real set (250K sentences from installed documentation,
      # all-MiniLM-L6-v2, cosine), made by bench/make_docs_set.py (~45 min).
      if [[ ! -f $DOCS/gt.ibin ]]; then
        python3 bench/make_docs_set.py --out "$DOCS" >&2
      fi
      echo "$DOCS/base.fbin $DOCS/query.fbin $DOCS/gt.ibin cosine" ;;
    *) echo "unknown set $1" >&2; exit 2 ;;
  esac
}

# tag: adds {"system": S} to each JSON line
tag() { sed "s/^{/{\"system\":\"$1\",/"; }

for set in $SETS; do
  read -r data queries gt metric < <(dataset "$set")
  dir=$OUT/$set
  mkdir -p "$dir"
  if [[ -n "${SKIP_BUILD:-}" && -f $dir/basalt/manifest && -d $dir/diskann ]]; then
    log "$set: reusing the built indexes"
  else
    log "$set: basalt build"
    /usr/bin/time -v $BASALT build --data "$data" --metric "$metric" --out "$dir/basalt" --R $R --L $BUILD_L \
      --alpha $ALPHA --pq-bytes $PQ --threads 2 --seed 1 --force --json > "$dir/basalt_build.json" 2> "$dir/basalt_build.err"
    log "$set: diskann build"
    $DPY bench/peers/diskann_build.py --data "$data" --metric "$metric" --out "$dir/diskann" --R $R --L $BUILD_L \
      --alpha $ALPHA --pq-bytes $PQ --threads 2 --force > "$dir/diskann_build.json" 2> "$dir/diskann_build.err"
  fi
  : > "$dir/search.jsonl"
  for rep in $(seq "$REPS"); do
    for t in 1 2; do
      log "$set: rep $rep, basalt, $t thread(s)"
      for w in $PIPE_W; do
        $BASALT search --index "$dir/basalt" --queries "$queries" --gt "$gt" --k 10 --L "$LS" --beam "$w" \
          --mode pipelined --threads $t --cache-nodes $CACHE --json 2>> "$dir/search.err" \
          | tag "basalt-pipelined-W$w" >> "$dir/search.jsonl"
      done
      $BASALT search --index "$dir/basalt" --queries "$queries" --gt "$gt" --k 10 --L "$LS" --beam 4 \
        --mode rounds --threads $t --cache-nodes $CACHE --json 2>> "$dir/search.err" \
        | tag "basalt-rounds-W4" >> "$dir/search.jsonl"
    done
    # Throughput mode: several queries in flight on each of the 2 threads.
    w=${PIPE_W%% *}
    for i in $INTERLEAVE; do
      log "$set: rep $rep, basalt, 2 threads, $i queries interleaved a thread"
      $BASALT search --index "$dir/basalt" --queries "$queries" --gt "$gt" --k 10 --L "$LS" --beam "$w" \
        --mode pipelined --threads 2 --interleave "$i" --cache-nodes $CACHE --json 2>> "$dir/search.err" \
        | tag "basalt-pipelined-W$w-i$i" >> "$dir/search.jsonl"
    done
    # DiskANN makes its sample-query cache at every load: one load per
    # width serves both thread counts.
    log "$set: rep $rep, diskann"
    for w in $DISKANN_W; do
      $DPY bench/peers/diskann_search.py --index "$dir/diskann" --queries "$queries" --gt "$gt" --k 10 --L "$LS" \
        --beam $w --thread-counts 1,2 --cache-nodes $CACHE --cache-mode sample 2>> "$dir/search.err" \
        | tag "diskann-W$w" >> "$dir/search.jsonl"
    done
  done
  python3 bench/disk_report.py "$dir" "$set" "$FPY" | tee "$dir/report.md"
done
log "done"

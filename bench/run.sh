#!/usr/bin/env bash
# The whole benchmark, in one run, against the peers measured in the same run:
#   1. distance kernels (criterion) vs the scalar reference loop;
#   2. `basalt gt` vs faiss IndexFlatL2 on 1M x 128 synthetic, 10K queries;
#   3. `basalt build` vs Microsoft DiskANN (diskannpy 0.7.0) on debian-384 and
#      on 1M x 128 synthetic, same R, L, alpha, PQ bytes and threads;
#   4. `basalt search` vs DiskANN's disk search on both, same L sweep, beam
#      width, cache size and threads, O_DIRECT on both, runs interleaved
#      (REPS times each) and reported as medians.
# Results go to bench/out/ (git-ignored); bench/summarize.py prints the tables
# that bench/README.md quotes. Takes ~30-40 minutes on a 2-core machine.
#
# Knobs (environment): THREADS (2), REPS (3), N (1000000), DIM (128),
# LS (the L sweep), CACHE (10000 cached nodes), CACHE_MODES ("hot bfs": the
# first is the primary comparison, basalt's hot list against DiskANN's
# sample-query cache; bfs compares both engines' BFS caches), SKIP_KERNELS=1,
# SKIP_GT=1, SKIP_1M=1, SKIP_DEBIAN=1, SKIP_DOCS=1, DOCS (the held-out real
# set made by bench/make_docs_set.py, default /work/data/docs-384),
# SKIP_BUILD=1 (reuse indexes already built in bench/out), EXTRA_U8=1 (also
# 500K x 128 u8 synthetic), SKIP_PEER_BUILD=1 (rebuild basalt only).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
REPS=${REPS:-3}
N=${N:-1000000}
DIM=${DIM:-128}
R=64; BUILD_L=100; ALPHA=1.2; PQ=32; BEAM=4; CACHE=${CACHE:-10000}
CACHE_MODES=${CACHE_MODES:-hot bfs}
DOCS=${DOCS:-/work/data/docs-384}
LS=${LS:-10,20,30,40,60,80,120,160,200,250,300}
OUT=bench/out
DEB=../shared/data/debian-384
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }

log "building basalt (release) and peers"
cargo build --release --quiet
BASALT=./target/release/basalt
bash bench/peers.sh > "$OUT/peers_versions.txt" 2>&1
FPY=bench/.venv-faiss/bin/python
DPY=bench/.venv-diskann/bin/python
nproc > "$OUT/machine.txt"; uname -r >> "$OUT/machine.txt"; grep -m1 'model name' /proc/cpuinfo >> "$OUT/machine.txt"

if [[ -z "${SKIP_KERNELS:-}" ]]; then
  log "kernels (criterion)"
  cargo bench --bench distance > "$OUT/kernels_criterion.txt" 2>&1
  python3 bench/kernels_report.py target/criterion > "$OUT/kernels.md"
fi

SYN=$OUT/syn
mkdir -p "$SYN"
if [[ -z "${SKIP_GT:-}${SKIP_1M:-}" || ! -f $SYN/base.fbin ]]; then
  log "generating ${N} x ${DIM} synthetic data"
  $BASALT gen --out $SYN/base.fbin --n "$N" --dim "$DIM" --clusters 64 --seed 7 --queries $SYN/q10k.fbin --nq 10000
  $BASALT gen --out $SYN/q_unused.fbin --n 1 --dim "$DIM" --seed 7 --queries $SYN/q1k.fbin --nq 1000
fi

if [[ -z "${SKIP_GT:-}" ]]; then
  : > "$OUT/gt.jsonl"
  for rep in $(seq "$REPS"); do
    log "gt rep $rep: basalt"
    $BASALT gt --base $SYN/base.fbin --queries $SYN/q10k.fbin --k 100 --metric l2 --threads "$THREADS" --out $SYN/gt10k.ibin --json \
      | sed 's/^/{"peer":"basalt","run":/; s/$/}/' >> "$OUT/gt.jsonl"
    log "gt rep $rep: faiss"
    $FPY bench/peers/faiss_exact.py --base $SYN/base.fbin --queries $SYN/q10k.fbin --k 100 --metric l2 --threads "$THREADS" --out $SYN/gt10k_faiss.ibin >> "$OUT/gt.jsonl"
  done
  $BASALT recall --gt $SYN/gt10k_faiss.ibin --results $SYN/gt10k.ibin --k 100 > "$OUT/gt_agreement.txt"
fi

# build_and_search NAME DATA QUERIES GT METRIC
build_and_search() {
  local name=$1 data=$2 queries=$3 gt=$4 metric=$5
  local dir=$OUT/$name
  mkdir -p "$dir"
  if [[ -n "${SKIP_BUILD:-}" && -f $dir/basalt/manifest && -d $dir/diskann ]]; then
    log "$name: reusing the built indexes (SKIP_BUILD)"
  else
  log "$name: basalt build"
  $BASALT build --data "$data" --metric "$metric" --out "$dir/basalt" --R $R --L $BUILD_L --alpha $ALPHA \
    --pq-bytes $PQ --threads "$THREADS" --seed 1 --force --json > "$dir/basalt_build.json" 2> "$dir/basalt_build.err"
  if [[ -n "${SKIP_PEER_BUILD:-}" && -d $dir/diskann ]]; then
    log "$name: reusing the DiskANN index (SKIP_PEER_BUILD)"
  else
  log "$name: diskann build"
  $DPY bench/peers/diskann_build.py --data "$data" --metric "$metric" --out "$dir/diskann" --R $R --L $BUILD_L \
    --alpha $ALPHA --pq-bytes $PQ --threads "$THREADS" --force > "$dir/diskann_build.json" 2> "$dir/diskann_build.err"
  fi
  fi
  $BASALT verify "$dir/basalt" > "$dir/basalt_verify.txt"
  local first=1
  for mode in $CACHE_MODES; do
    # basalt's hot list is the counterpart of DiskANN's sample-query cache.
    local dmode=$mode sfx=""
    [[ $mode == hot ]] && dmode=sample
    [[ $first == 1 ]] || sfx="_$mode"
    first=0
    : > "$dir/basalt_search$sfx.jsonl"; : > "$dir/diskann_search$sfx.jsonl"
    for rep in $(seq "$REPS"); do
      log "$name: search rep $rep ($mode): basalt"
      $BASALT search --index "$dir/basalt" --queries "$queries" --gt "$gt" --k 10 --L "$LS" --beam $BEAM \
        --threads "$THREADS" --cache-nodes $CACHE --cache-policy "$mode" --json >> "$dir/basalt_search$sfx.jsonl" 2>> "$dir/basalt_search.err"
      log "$name: search rep $rep ($dmode): diskann"
      $DPY bench/peers/diskann_search.py --index "$dir/diskann" --queries "$queries" --gt "$gt" --k 10 --L "$LS" \
        --beam $BEAM --threads "$THREADS" --cache-nodes $CACHE --cache-mode "$dmode" >> "$dir/diskann_search$sfx.jsonl" 2>> "$dir/diskann_search.err"
    done
    python3 bench/summarize.py median "$dir/basalt_search$sfx.jsonl" > "$dir/basalt_median$sfx.jsonl"
    python3 bench/summarize.py median "$dir/diskann_search$sfx.jsonl" > "$dir/diskann_median$sfx.jsonl"
  done
  $FPY bench/peers/plot.py --basalt "$dir/basalt_median.jsonl" --diskann "$dir/diskann_median.jsonl" \
    --out "$dir/recall_qps.png" --title "$name: recall@10 vs QPS ($THREADS threads, W=$BEAM, R=$R, PQ $PQ B)"
}

if [[ -z "${SKIP_DEBIAN:-}" ]]; then
  build_and_search debian384 $DEB/base.fbin $DEB/query.fbin $DEB/gt.ibin l2
fi
if [[ -z "${SKIP_DOCS:-}" ]]; then
  if [[ ! -f $DOCS/gt.ibin ]]; then
    log "making the held-out docs set in $DOCS (bench/make_docs_set.py, ~45 min)"
    python3 bench/make_docs_set.py --out "$DOCS"
  fi
  build_and_search docs384 $DOCS/base.fbin $DOCS/query.fbin $DOCS/gt.ibin cosine
fi
if [[ -z "${SKIP_1M:-}" ]]; then
  if [[ ! -f $SYN/gt1k.ibin ]]; then
    $BASALT gt --base $SYN/base.fbin --queries $SYN/q1k.fbin --k 100 --metric l2 --threads "$THREADS" --out $SYN/gt1k.ibin > /dev/null
  fi
  build_and_search syn1m $SYN/base.fbin $SYN/q1k.fbin $SYN/gt1k.ibin l2
fi
if [[ -n "${EXTRA_U8:-}" ]]; then
  U8=$OUT/u8
  mkdir -p "$U8"
  if [[ ! -f $U8/gt.ibin ]]; then
    log "generating 500000 x 128 u8 synthetic data"
    $BASALT gen --out $U8/base.u8bin --n 500000 --dim 128 --dtype u8 --clusters 64 --seed 11 --queries $U8/q.u8bin --nq 1000
    $BASALT gt --base $U8/base.u8bin --queries $U8/q.u8bin --k 100 --metric l2 --threads "$THREADS" --out $U8/gt.ibin > /dev/null
  fi
  build_and_search u8_500k $U8/base.u8bin $U8/q.u8bin $U8/gt.ibin l2
fi
log "summary"
python3 bench/summarize.py report "$OUT" | tee "$OUT/summary.md"
# Counts gate: recall at fixed L and reads at fixed recall against the last
# recorded results (bench/results); a regression fails the run.
log "gate against bench/results"
python3 bench/summarize.py gate "$OUT" | tee "$OUT/gate.txt"
log "done"

#!/usr/bin/env python3
"""Search a diskannpy 0.7.0 disk index over a sweep of L and print JSON lines.

  bench/.venv-diskann/bin/python bench/peers/diskann_search.py \
      --index DIR --queries Q.fbin --gt GT.ibin [--k 10] [--L 10,20,40,80,160] \
      [--beam 4] [--threads T] [--cache-nodes C] [--cache-mode sample|bfs] \
      [--reps 1] [--warmup] [--latency-pass] [--drop-caches] [--thread-counts 1,2]

One JSON object per L on stdout, with the keys `basalt search --json` prints
(L, beam, threads, k, recall, qps, latency_us_mean, latency_us_p50,
latency_us_p99, reads_mean, hops_mean, cache_hits_mean) -- null where DiskANN
cannot say -- followed by a few diskann-only keys. DiskANN's own log goes to
stderr.

How each number is obtained (see bench/PEERS_NOTES.md):
* qps: nq / wall time of one StaticDiskIndex.batch_search call (OpenMP,
  `--threads`, dynamic schedule of 1 query). With --reps > 1 the fastest run.
* recall: recall@k, tie-aware as in basalt (src/recall.rs): an id is a hit
  if it is in the true top k or ties the k-th true score further down the
  ground-truth list.
* latency_us_mean: wall * threads / nq (the mean busy time per query when
  every thread is busy) -- diskannpy returns no per-query timings.
  latency_us_p50/p99 are null unless --latency-pass, which times each query
  alone through StaticDiskIndex.search (one thread, one query in flight; the
  binding keeps the GIL, so Python threads cannot overlap them) and also
  reports that pass's mean as seq_latency_us_mean.
* reads_mean: diskannpy drops DiskANN's QueryStats (batch_search passes no
  stats; search() fills one and throws it away). DiskANN reads nodes with
  O_DIRECT + libaio, so every read reaches the block layer and is counted
  in /proc/self/io read_bytes. reads_mean = delta(read_bytes) / (4096 *
  sectors_per_node) / nq = node reads per query, which is what DiskANN's
  QueryStats n_ios ("Mean IOs") counts; sectors_mean is the same in 4 KiB
  sectors. Cached nodes cost no read. (Checked against strace of io_submit.)
* hops_mean, cache_hits_mean: not observable -> null.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import binio  # noqa: E402

import numpy as np  # noqa: E402

SECTOR = 4096
PREFIX = "ann"


def read_bytes():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return None


def disk_layout(index_dir):
    """max_node_len, nodes_per_sector, sectors_per_node from ann_disk.index's metadata sector.

    The file starts with a bin header (i32 rows, i32 cols) and u64 fields:
    npts, ndims, medoid, max_node_len, nnodes_per_sector, ... (create_disk_layout).
    A node larger than a sector has nnodes_per_sector = 0 and is read as
    ceil(max_node_len / 4096) sectors in one request (pq_flash_index.cpp).
    """
    with open(os.path.join(index_dir, f"{PREFIX}_disk.index"), "rb") as f:
        rows, cols = (int(v) for v in np.frombuffer(f.read(8), dtype="<i4"))
        meta = np.frombuffer(f.read(8 * rows * cols), dtype="<u8")
    max_node_len, per_sector = int(meta[3]), int(meta[4])
    spn = 1 if per_sector > 0 else -(-max_node_len // SECTOR)
    return {"npts": int(meta[0]), "ndims": int(meta[1]), "max_node_len": max_node_len,
            "nodes_per_sector": per_sector, "sectors_per_node": spn}


def drop_caches():
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        print(f"warning: could not drop page cache: {e}", file=sys.stderr)
        return False


def percentile(xs, p):
    return float(np.percentile(np.asarray(xs), p)) if len(xs) else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="directory written by diskann_build.py")
    ap.add_argument("--queries", required=True)
    ap.add_argument("--gt", required=True, help="ground truth .ibin (u32 n | u32 k | ids | f32 scores)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--L", default="10,20,40,80,160", help="comma-separated search complexities")
    ap.add_argument("--beam", type=int, default=4, help="beam width W (max parallel reads per hop)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--cache-nodes", type=int, default=0, help="nodes DiskANN keeps in RAM (0 = none)")
    ap.add_argument("--cache-mode", choices=["sample", "bfs"], default="sample",
                    help="sample: nodes most visited by the build's sample queries (what search_disk_index "
                         "does); bfs: BFS levels around the medoid")
    ap.add_argument("--reps", type=int, default=1, help="timed batch runs per L; the fastest is reported")
    ap.add_argument("--thread-counts", default=None,
                    help="comma-separated search thread counts run at each L on one load "
                         "(the index is loaded with the largest); overrides --threads")
    ap.add_argument("--warmup", action="store_true", help="one untimed batch at each L before timing")
    ap.add_argument("--latency-pass", action="store_true",
                    help="also time every query alone (single-threaded) for p50/p99")
    ap.add_argument("--drop-caches", action="store_true",
                    help="sync; echo 3 > /proc/sys/vm/drop_caches before loading (root only)")
    a = ap.parse_args()

    # Everything DiskANN prints goes to fd 1; keep our stdout for JSON only.
    json_out = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)

    if a.threads <= 0:  # batch_search would hand 0 to omp_set_num_threads
        a.threads = os.cpu_count()
    # Several thread counts share one load (the sample-query cache is made
    # at load, ~45 s on debian-384 with 2 threads): each L runs once per count.
    counts = [int(x) for x in a.thread_counts.split(",")] if a.thread_counts else [a.threads]
    a.threads = max(counts)
    Ls = [int(x) for x in a.L.split(",") if x.strip()]
    side = {}
    side_path = os.path.join(a.index, "peer_build.json")
    if os.path.exists(side_path):
        with open(side_path) as f:
            side = json.load(f)
    normalise = side.get("metric") == "cosine"

    layout = disk_layout(a.index)
    dropped = drop_caches() if a.drop_caches else None

    import diskannpy
    from importlib.metadata import version

    cache_mechanism = 0 if a.cache_nodes == 0 else (1 if a.cache_mode == "sample" else 2)
    t0 = time.perf_counter()
    index = diskannpy.StaticDiskIndex(
        index_directory=a.index,
        num_threads=a.threads,
        num_nodes_to_cache=a.cache_nodes,
        cache_mechanism=cache_mechanism,
        index_prefix=PREFIX,
    )
    load_s = time.perf_counter() - t0
    dtype = index._vector_dtype  # set by StaticDiskIndex from ann_metadata.bin

    q = np.asarray(binio.read_vectors(a.queries, mmap=False))
    if normalise:
        q = q.astype(np.float32)
        nrm = np.linalg.norm(q, axis=1, keepdims=True)
        nrm[nrm == 0] = 1.0
        q = q / nrm
    if q.dtype != dtype:
        if np.issubdtype(dtype, np.integer):
            raise SystemExit(f"queries are {q.dtype}, index is {np.dtype(dtype).name}")
        q = q.astype(dtype)
    q = np.ascontiguousarray(q)
    nq = q.shape[0]

    gt_ids, gt_scores = binio.read_gt(a.gt)
    if gt_ids.shape[0] < nq:
        raise SystemExit(f"ground truth has {gt_ids.shape[0]} queries, fewer than {nq}")
    hits = binio.hit_sets(gt_ids[:nq], None if gt_scores is None else gt_scores[:nq], a.k)

    for L, threads in [(L, t) for L in Ls for t in counts]:
        a.threads = threads
        if a.warmup:
            index.batch_search(q, k_neighbors=a.k, complexity=L, num_threads=a.threads, beam_width=a.beam)
        best = None
        for _ in range(max(1, a.reps)):
            rb0 = read_bytes()
            t0 = time.perf_counter()
            ids, _dists = index.batch_search(q, k_neighbors=a.k, complexity=L,
                                             num_threads=a.threads, beam_width=a.beam)
            wall = time.perf_counter() - t0
            rb1 = read_bytes()
            if best is None or wall < best[0]:
                best = (wall, ids, None if rb0 is None else rb1 - rb0)
        wall, ids, rbytes = best
        busy_threads = max(1, min(a.threads, nq))

        seq = None
        if a.latency_pass:
            seq = []
            for i in range(nq):
                t1 = time.perf_counter_ns()
                index.search(q[i], k_neighbors=a.k, complexity=L, beam_width=a.beam)
                seq.append((time.perf_counter_ns() - t1) / 1000.0)

        rec = {
            "L": L,
            "beam": a.beam,
            "threads": a.threads,
            "k": a.k,
            "recall": round(binio.mean_recall(ids, hits, a.k), 6),
            "qps": round(nq / wall, 2),
            "latency_us_mean": round(wall * busy_threads / nq * 1e6, 2),
            "latency_us_p50": None if seq is None else round(percentile(seq, 50), 2),
            "latency_us_p99": None if seq is None else round(percentile(seq, 99), 2),
            "reads_mean": None if rbytes is None else round(rbytes / (SECTOR * layout["sectors_per_node"]) / nq, 3),
            "hops_mean": None,
            "cache_hits_mean": None,
            # diskann-only extras
            "peer": "diskann",
            "diskannpy_version": version("diskannpy"),
            "nq": nq,
            "wall_s": round(wall, 6),
            "reps": max(1, a.reps),
            "cache_nodes": a.cache_nodes,
            "cache_mode": a.cache_mode if a.cache_nodes else None,
            "load_s": round(load_s, 3),
            "dropped_caches": dropped,
            "seq_latency_us_mean": None if seq is None else round(float(np.mean(seq)), 2),
            "latency_source": "batch_wall*threads/nq" + ("; p50/p99: sequential search()" if seq else ""),
            "sectors_mean": None if rbytes is None else round(rbytes / SECTOR / nq, 3),
            "sectors_per_node": layout["sectors_per_node"],
            "reads_source": "proc_io_read_bytes/(4096*sectors_per_node)",
        }
        binio.emit(rec, json_out)


if __name__ == "__main__":
    main()

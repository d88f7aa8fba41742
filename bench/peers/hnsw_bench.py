#!/usr/bin/env python3
"""Build or search an in-memory HNSW index (hnswlib or faiss) and print JSON lines.

  bench/.venv-faiss/bin/python bench/peers/hnsw_bench.py build \
      --lib hnswlib|faiss --data BASE.fbin --metric l2|cosine|ip --M 16 \
      [--ef-construction 200] --threads T --out INDEX_FILE
  bench/.venv-faiss/bin/python bench/peers/hnsw_bench.py search \
      --lib hnswlib|faiss --index INDEX_FILE --data BASE.fbin --metric ... --M 16 \
      --queries Q.fbin --gt GT.ibin [--k 10] --ef 16,32,64 --threads T

build prints one object: build_s (wall time of adding every point, with
`--threads` threads), peak_rss_mb (this process's ru_maxrss: the data as
numpy arrays plus the index) and index_bytes (the saved file).
search loads the saved index (hnswlib: load_index; faiss: read_index) and
prints one object per ef with the keys `basalt search --json` prints that
apply: ef (as "L"), threads, k, recall (tie-aware, as basalt's), qps (nq /
wall time of one batch call that runs the queries on `--threads` threads:
hnswlib's knn_query(num_threads) or faiss's OpenMP search), and
peak_rss_mb of the searching process.
Queries and data are converted to float32 (hnswlib and faiss HNSW index
float32 only); for cosine the vectors are normalised first.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import binio  # noqa: E402


def load_f32(path, metric):
    x = np.ascontiguousarray(binio.read_vectors(path, mmap=False), dtype=np.float32)
    if metric == "cosine":
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    return x


def space(metric):
    return {"l2": "l2", "cosine": "ip", "ip": "ip"}[metric]


def build(a):
    x = load_f32(a.data, a.metric)
    n, dim = x.shape
    t = time.perf_counter()
    if a.lib == "hnswlib":
        import hnswlib

        idx = hnswlib.Index(space=space(a.metric), dim=dim)
        idx.init_index(max_elements=n, M=a.M, ef_construction=a.ef_construction, random_seed=1)
        idx.add_items(x, np.arange(n), num_threads=a.threads)
        took = time.perf_counter() - t
        idx.save_index(a.out)
    else:
        import faiss

        faiss.omp_set_num_threads(a.threads)
        m = faiss.METRIC_L2 if a.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        idx = faiss.IndexHNSWFlat(dim, a.M, m)
        idx.hnsw.efConstruction = a.ef_construction
        idx.add(x)
        took = time.perf_counter() - t
        faiss.write_index(idx, a.out)
    binio.emit({"lib": a.lib, "M": a.M, "ef_construction": a.ef_construction, "n": n,
                "dim": dim, "threads": a.threads, "build_s": took,
                "peak_rss_mb": binio.peak_rss_mb(), "index_bytes": os.path.getsize(a.out)})


def search(a):
    q = load_f32(a.queries, a.metric)
    nq, dim = q.shape
    gt_ids, gt_scores = binio.read_gt(a.gt)
    sets = binio.hit_sets(gt_ids, gt_scores, a.k)
    if a.lib == "hnswlib":
        import hnswlib

        idx = hnswlib.Index(space=space(a.metric), dim=dim)
        idx.load_index(a.index)

        def run(ef):
            idx.set_ef(ef)
            t = time.perf_counter()
            labels, _ = idx.knn_query(q, k=a.k, num_threads=a.threads)
            return labels, time.perf_counter() - t
    else:
        import faiss

        faiss.omp_set_num_threads(a.threads)
        idx = faiss.read_index(a.index)

        def run(ef):
            idx.hnsw.efSearch = ef
            t = time.perf_counter()
            _, labels = idx.search(q, a.k)
            return labels, time.perf_counter() - t
    for ef in a.ef:
        if ef < a.k:
            continue
        labels, wall = run(ef)
        binio.emit({"lib": a.lib, "M": a.M, "L": ef, "threads": a.threads, "k": a.k,
                    "recall": binio.mean_recall(labels, sets, a.k), "qps": nq / wall,
                    "peak_rss_mb": binio.peak_rss_mb()})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["build", "search"])
    p.add_argument("--lib", choices=["hnswlib", "faiss"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--metric", choices=["l2", "cosine", "ip"], default="l2")
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out")
    p.add_argument("--index")
    p.add_argument("--queries")
    p.add_argument("--gt")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ef", type=lambda s: [int(v) for v in s.split(",")], default=[10, 20, 40, 80])
    a = p.parse_args()
    if a.mode == "build":
        if not a.out:
            p.error("build needs --out")
        build(a)
    else:
        if not (a.index and a.queries and a.gt):
            p.error("search needs --index, --queries and --gt")
        search(a)


if __name__ == "__main__":
    main()

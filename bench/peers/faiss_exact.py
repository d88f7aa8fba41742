#!/usr/bin/env python3
"""Exact k-NN with faiss IndexFlat: the peer baseline for brute-force ground truth.

  bench/.venv-faiss/bin/python bench/peers/faiss_exact.py \
      --base X.fbin --queries Q.fbin --k K --metric l2|ip|cosine --threads T --out gt.ibin

Reads .fbin/.u8bin/.i8bin (integer types are cast to float32), adds the base to
IndexFlatL2 (l2) or IndexFlatIP (ip; cosine = both sides L2-normalised, then IP)
and searches all queries in one call. Only the faiss calls are timed: `add_s`
is the sum of the index.add calls, `search_s` the single index.search call.

Writes the ground-truth layout (u32 n | u32 k | ids | f32 scores): squared L2
for l2 (what faiss returns), inner product for ip, cosine similarity for cosine.
Prints one JSON line on stdout.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import binio  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

ADD_CHUNK_ROWS = 1 << 18


def as_f32(block, normalise):
    # Always an owned, writable copy: the source may be a read-only memmap.
    x = np.array(block, dtype=np.float32, order="C", copy=True)
    if normalise:
        faiss.normalize_L2(x)
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--metric", choices=["l2", "ip", "cosine"], required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    faiss.omp_set_num_threads(a.threads)
    base = binio.read_vectors(a.base)
    queries = binio.read_vectors(a.queries)
    n, dim = base.shape
    if queries.shape[1] != dim:
        raise SystemExit(f"dimension mismatch: base {dim}, queries {queries.shape[1]}")
    if not 1 <= a.k <= n:
        raise SystemExit(f"k must be in [1, {n}]")

    normalise = a.metric == "cosine"
    index = faiss.IndexFlatL2(dim) if a.metric == "l2" else faiss.IndexFlatIP(dim)

    add_s = 0.0
    for start in range(0, n, ADD_CHUNK_ROWS):
        block = as_f32(base[start:start + ADD_CHUNK_ROWS], normalise)
        t0 = time.perf_counter()
        index.add(block)
        add_s += time.perf_counter() - t0
    del base

    q = as_f32(queries, normalise)
    t0 = time.perf_counter()
    scores, ids = index.search(q, a.k)
    search_s = time.perf_counter() - t0

    if (ids < 0).any():
        raise SystemExit("faiss returned -1 ids (fewer than k results for some query)")
    binio.write_gt(a.out, ids.astype(np.uint32), scores)
    binio.emit({
        "peer": "faiss",
        "faiss_version": faiss.__version__,
        "index": type(index).__name__,
        "metric": a.metric,
        "n": n, "dim": dim, "nq": int(q.shape[0]), "k": a.k,
        "search_s": round(search_s, 6),
        "add_s": round(add_s, 6),
        "threads": a.threads,
        "out": a.out,
    })


if __name__ == "__main__":
    main()

"""Readers and writers for the big-ann-benchmarks binary formats (numpy only).

Vector files   (.fbin / .u8bin / .i8bin):  u32 n | u32 dim | n*dim elements
Ground truth   (.ibin / .bin):             u32 n | u32 k | n*k u32 ids | n*k f32 scores
               (a file that stops after the ids has no scores)

Scores are the metric's natural score: squared L2 (ascending), inner product
or cosine similarity (descending) -- the same convention as basalt's `gt`.
Shared by the faiss and diskann venvs, so it must not import anything but
numpy and the standard library.
"""

import json
import os
import resource
import sys

import numpy as np

DTYPE_BY_EXT = {
    ".fbin": np.float32,
    ".u8bin": np.uint8,
    ".i8bin": np.int8,
}


def vector_dtype(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in DTYPE_BY_EXT:
        raise SystemExit(f"{path}: unknown vector file extension {ext!r} "
                         f"(expected one of {', '.join(DTYPE_BY_EXT)})")
    return DTYPE_BY_EXT[ext]


def read_header(path):
    with open(path, "rb") as f:
        hdr = f.read(8)
    if len(hdr) != 8:
        raise SystemExit(f"{path}: too short for the 8-byte header")
    n, dim = (int(x) for x in np.frombuffer(hdr, dtype="<u4"))
    return n, dim


def read_vectors(path, mmap=True):
    """Returns an (n, dim) array in the file's own dtype (memory-mapped by default)."""
    dtype = np.dtype(vector_dtype(path))
    n, dim = read_header(path)
    want = 8 + n * dim * dtype.itemsize
    have = os.path.getsize(path)
    if have != want:
        raise SystemExit(f"{path}: header says {n} x {dim} {dtype} = {want} bytes, file has {have}")
    if mmap:
        return np.memmap(path, dtype=dtype, mode="r", offset=8, shape=(n, dim))
    with open(path, "rb") as f:
        f.seek(8)
        return np.fromfile(f, dtype=dtype, count=n * dim).reshape(n, dim)


def write_vectors(path, x):
    x = np.ascontiguousarray(x)
    if x.dtype != np.dtype(vector_dtype(path)):
        raise SystemExit(f"{path}: extension wants {vector_dtype(path).__name__}, array is {x.dtype}")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.array(x.shape, dtype="<u4").tofile(f)
        x.tofile(f)
    os.replace(tmp, path)


def read_gt(path):
    """Returns (ids[n,k] uint32, scores[n,k] float32 or None)."""
    with open(path, "rb") as f:
        n, k = (int(v) for v in np.frombuffer(f.read(8), dtype="<u4"))
        size = os.path.getsize(path)
        cells = n * k
        if size not in (8 + 4 * cells, 8 + 8 * cells):
            raise SystemExit(f"{path}: header says {n} x {k}, file size {size} fits neither layout")
        ids = np.fromfile(f, dtype="<u4", count=cells).reshape(n, k)
        scores = None
        if size == 8 + 8 * cells:
            scores = np.fromfile(f, dtype="<f4", count=cells).reshape(n, k)
    return ids, scores


def write_gt(path, ids, scores):
    ids = np.ascontiguousarray(ids, dtype="<u4")
    scores = np.ascontiguousarray(scores, dtype="<f4")
    assert ids.shape == scores.shape and ids.ndim == 2
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.array(ids.shape, dtype="<u4").tofile(f)
        ids.tofile(f)
        scores.tofile(f)
    os.replace(tmp, path)


def hit_sets(gt_ids, gt_scores, k):
    """Per query, the ids that count as a hit for recall@k.

    Same rule as basalt's src/recall.rs: the true top k, plus any id listed
    past rank k whose score equals the k-th score (a tie at the boundary is
    not a miss). Ties are only visible when the ground truth lists more than
    k neighbours with scores.
    """
    n, gk = gt_ids.shape
    if gk < k:
        raise SystemExit(f"ground truth lists {gk} neighbours per query, fewer than k = {k}")
    sets = []
    for q in range(n):
        s = set(int(i) for i in gt_ids[q, :k])
        if gt_scores is not None:
            kth = gt_scores[q, k - 1]
            for j in range(k, gk):
                if gt_scores[q, j] == kth:
                    s.add(int(gt_ids[q, j]))
                else:
                    break
        sets.append(s)
    return sets


def mean_recall(results, sets, k):
    """Mean recall@k of `results` (n x >=k ids) against hit sets; duplicates count once."""
    total = 0.0
    for q, hits in enumerate(sets):
        seen = set()
        for i in results[q, :k]:
            i = int(i)
            if i in hits:
                seen.add(i)
        total += min(len(seen), k) / k
    return total / len(sets)


def peak_rss_mb(who=resource.RUSAGE_SELF):
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(who).ru_maxrss / 1024.0


def emit(obj, stream=None):
    stream = stream or sys.stdout
    stream.write(json.dumps(obj, sort_keys=False) + "\n")
    stream.flush()

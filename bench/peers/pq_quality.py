#!/usr/bin/env python3
"""How well each engine's PQ codes rank points on their own (no graph).

  bench/.venv-faiss/bin/python bench/peers/pq_quality.py \
      --basalt IDX --diskann DIR --queries Q.fbin --gt GT.ibin [--metric cosine] [--nq 200]

For each engine: the query's squared-L2 lookup table over its codebook
(centroid subtracted, as both search loops do), every point's PQ distance,
then recall@10 of the top 10 by PQ, and the share of the true top 10 found
among the top 100 / top 1000 by PQ (what a beam steered by PQ can still
rerank). Also the mean relative error of the PQ distance against the exact
squared L2 for the true top 100. Cosine: queries and data normalised (both
engines store normalised vectors). Prints one JSON line per engine.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import binio  # noqa: E402


def basalt_pq(idx):
    """(centroid, chunk offsets, centres per chunk, codes) of a basalt index."""
    with open(os.path.join(idx, "gen-0/pq"), "rb") as f:
        b = f.read()
    assert b[:8] == b"BASALTPQ", "not a basalt pq file"
    version, dim, m, k = struct.unpack_from("<IIII", b, 8)
    assert version == 2, f"pq version {version}"
    at = 48
    offsets = np.frombuffer(b, "<u4", m + 1, at).astype(np.int64)
    at += 4 * (m + 1)
    centroid = np.frombuffer(b, "<f4", dim, at)
    at += 4 * dim
    centres = []
    for c in range(m):
        w = int(offsets[c + 1] - offsets[c])
        centres.append(np.frombuffer(b, "<f4", k * w, at).reshape(k, w))
        at += 4 * k * w
    with open(os.path.join(idx, "gen-0/codes"), "rb") as f:
        cb = f.read()
    mm, n = struct.unpack_from("<IQ", cb, 12)
    codes = np.frombuffer(cb, np.uint8, n * mm, 40).reshape(n, mm)
    ids = os.path.join(idx, "gen-0/ids")
    if os.path.exists(ids):
        # A packed index numbers its nodes apart from the input rows; its
        # ids file (16-byte entries after a 64-byte header, the row in the
        # last 8 bytes) maps node -> row. Put the codes back in row order.
        with open(ids, "rb") as f:
            f.seek(64)
            e = np.frombuffer(f.read(16 * n), np.uint8).reshape(n, 16)
        rows = e[:, 8:16].copy().view("<u8").reshape(n)
        by_row = np.empty_like(codes)
        by_row[rows] = codes
        codes = by_row
    return centroid, offsets, centres, codes


def diskann_pq(d):
    piv = os.path.join(d, "ann_pq_pivots.bin")
    with open(piv, "rb") as f:
        nr, nc = struct.unpack("<II", f.read(8))
        offs = np.frombuffer(f.read(8 * nr * nc), "<u8").astype(np.int64)
        f.seek(int(offs[0]))
        k, dim = struct.unpack("<II", f.read(8))
        pivots = np.frombuffer(f.read(4 * k * dim), "<f4").reshape(k, dim)
        f.seek(int(offs[1]))
        n1, n2 = struct.unpack("<II", f.read(8))
        centroid = np.frombuffer(f.read(4 * n1 * n2), "<f4")
        f.seek(int(offs[2]))
        n_off, _ = struct.unpack("<II", f.read(8))
        offsets = np.frombuffer(f.read(4 * n_off), "<u4").astype(np.int64)
    centres = [pivots[:, offsets[c]:offsets[c + 1]] for c in range(len(offsets) - 1)]
    with open(os.path.join(d, "ann_pq_compressed.bin"), "rb") as f:
        n, m = struct.unpack("<II", f.read(8))
        codes = np.frombuffer(f.read(n * m), np.uint8).reshape(n, m)
    return centroid, offsets, centres, codes


def pq_distances(q, centroid, offsets, centres, codes):
    qc = q - centroid
    total = np.zeros(codes.shape[0], np.float32)
    for c, cen in enumerate(centres):
        sub = qc[offsets[c]:offsets[c + 1]]
        table = ((cen - sub) ** 2).sum(axis=1)
        total += table[codes[:, c]]
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--basalt", required=True)
    ap.add_argument("--diskann", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--base", help="base vectors, for the distance-error column")
    ap.add_argument("--metric", default="cosine")
    ap.add_argument("--nq", type=int, default=200)
    a = ap.parse_args()
    q = binio.read_vectors(a.queries).astype(np.float32)[: a.nq]
    if a.metric == "cosine":
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    gt_ids, _ = binio.read_gt(a.gt)
    base = None
    if a.base:
        base = binio.read_vectors(a.base).astype(np.float32)
        if a.metric == "cosine":
            base /= np.linalg.norm(base, axis=1, keepdims=True)
    for name, pq in (("basalt", basalt_pq(a.basalt)), ("diskann", diskann_pq(a.diskann))):
        r10 = r100 = r1000 = err = 0.0
        for i, qv in enumerate(q):
            d = pq_distances(qv, *pq)
            order = np.argsort(d, kind="stable")
            truth = set(int(x) for x in gt_ids[i][:10])
            r10 += len(truth & set(int(x) for x in order[:10])) / 10
            r100 += len(truth & set(int(x) for x in order[:100])) / 10
            r1000 += len(truth & set(int(x) for x in order[:1000])) / 10
            if base is not None:
                ids = gt_ids[i][:100]
                exact = ((base[ids] - qv) ** 2).sum(axis=1)
                err += float(np.mean(np.abs(d[ids] - exact) / np.maximum(exact, 1e-9)))
        n = len(q)
        print(json.dumps({"engine": name, "queries": n, "pq_recall10_at10": r10 / n,
                          "pq_recall10_at100": r100 / n, "pq_recall10_at1000": r1000 / n,
                          "pq_rel_error_top100": err / n if base is not None else None,
                          "chunks": pq[3].shape[1]}))


if __name__ == "__main__":
    main()

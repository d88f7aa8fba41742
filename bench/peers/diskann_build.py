#!/usr/bin/env python3
"""Build a DiskANN *disk* index (SSD layout + in-RAM PQ) with diskannpy 0.7.0.

  bench/.venv-diskann/bin/python bench/peers/diskann_build.py \
      --data X.fbin --metric l2|ip|cosine --out DIR \
      [--R 64] [--L 100] [--alpha 1.2] [--pq-bytes 32] [--threads T] \
      [--build-memory-gb G [--partitioned]] [--force]

What it pins down (read from DiskANN 0.7.0, src/disk_utils.cpp and
python/src/builder.cpp; see bench/PEERS_NOTES.md):

* In-RAM PQ size.  diskannpy has no "PQ bytes" knob for disk indices: the
  chunk count (= bytes per vector, 256 centroids per chunk) is derived from
  `search_memory_maximum` B (GB):
      B  -> std::to_string(B)            (printf "%f": 6 decimals)
         -> atof                          (back to double)
      B' = B - 0.25  if B - 0.25 > 1.0 else B          (get_memory_budget)
      chunks = floor(uint64(B' * 1024^3 / N))
      chunks = clamp(chunks, 1, min(dim_eff, 512))     (dim_eff = dim+1 for mips)
  We pick B in micro-GB steps so that `chunks == --pq-bytes` exactly, check
  it by simulating the formula, then read the chunk count back from
  ann_pq_compressed.bin and ann_pq_pivots.bin after the build.
* One-shot build.  The graph is built in one piece when
  estimate_ram_usage(N, dim, sizeof(T), R) < build_memory_maximum * 1024^3;
  we set build_memory_maximum to twice that estimate (at least 1 GB) and
  verify "building in one shot" in DiskANN's log (no partition + merge).
  With --partitioned the budget is the caller's (--build-memory-gb) and
  the build must be DiskANN's partitioned one (k-means shards, each point
  in 2, shard graphs merged), which the log must show.
* pq_disk_bytes = 0: full-precision vectors in the disk nodes.
* alpha is NOT a parameter of build_disk_index in 0.7.0: the disk build uses
  IndexWriteParametersBuilder(L, R) without with_alpha(), i.e.
  defaults::ALPHA = 1.2f (and saturate_graph = true).  --alpha is accepted
  only when it equals 1.2, so a run never silently differs from its label.
* cosine: diskannpy 0.7.0 refuses cosine for disk indices.  We L2-normalise
  the base into a temporary .fbin inside DIR and build an l2 index (same
  ranking for unit vectors); diskann_search.py normalises the queries, driven
  by DIR/peer_build.json.

The build runs in a child process (its stdout/stderr, i.e. DiskANN's log, go
to DIR/build.log) so that wall time and the peak RSS (wait4's ru_maxrss of
that child alone) belong to the build only.  Prints one JSON line on stdout.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import binio  # noqa: E402

import numpy as np  # noqa: E402

PREFIX = "ann"
GIB = 1024.0 * 1024.0 * 1024.0
# DiskANN 0.7.0 constants (include/disk_utils.h, include/pq_common.h, include/index.h, include/defaults.h)
SPACE_FOR_CACHED_NODES_IN_GB = 0.25
THRESHOLD_FOR_CACHING_IN_GB = 1.0
MAX_PQ_CHUNKS = 512
OVERHEAD_FACTOR = 1.1
GRAPH_SLACK_FACTOR = 1.3
SIZEOF_STD_MUTEX = 40  # non_recursive_mutex = std::mutex on Linux x86-64
DISK_BUILD_ALPHA = 1.2
SIDE_FILE = "peer_build.json"


# ---------------------------------------------------------------- formulas

def cpp_to_string(x):
    """std::to_string(double): printf("%f")."""
    return "%f" % x


def pq_chunks_for(search_memory_gb, n, dim_eff):
    """num_pq_chunks exactly as diskannpy 0.7.0 -> diskann::build_disk_index computes it."""
    b = float(cpp_to_string(search_memory_gb))           # to_string, then atof
    if b - SPACE_FOR_CACHED_NODES_IN_GB > THRESHOLD_FOR_CACHING_IN_GB:
        b = b - SPACE_FOR_CACHED_NODES_IN_GB
    limit = b * 1024 * 1024 * 1024
    if limit <= 0:
        raise ValueError("search memory budget must be > 0")
    chunks = int(limit / float(n))                        # uint64 cast truncates == floor
    chunks = max(chunks, 1)
    chunks = min(chunks, dim_eff)
    chunks = min(chunks, MAX_PQ_CHUNKS)
    return chunks


def search_memory_for_pq_bytes(n, dim_eff, pq_bytes):
    """A 6-decimal search_memory_maximum (GB) that yields exactly pq_bytes chunks."""
    if not 1 <= pq_bytes <= min(dim_eff, MAX_PQ_CHUNKS):
        raise SystemExit(f"--pq-bytes must be in [1, {min(dim_eff, MAX_PQ_CHUNKS)}]: DiskANN caps the "
                         f"chunk count at min(dim, {MAX_PQ_CHUNKS}), dim = {dim_eff} here (+1 for mips)")
    # Aim at the middle of the byte interval [pq*n, (pq+1)*n).
    b_eff = (pq_bytes + 0.5) * n / GIB
    b = b_eff + SPACE_FOR_CACHED_NODES_IN_GB if b_eff > THRESHOLD_FOR_CACHING_IN_GB else b_eff
    centre = round(b * 1e6)
    for delta in sorted(range(-2000, 2001), key=abs):
        micro = centre + delta
        if micro <= 0:
            continue
        cand = float("%d.%06d" % divmod(micro, 1000000))
        if pq_chunks_for(cand, n, dim_eff) == pq_bytes:
            return cand
    raise SystemExit(f"no 6-decimal search_memory_maximum gives exactly {pq_bytes} PQ chunks for N={n} "
                     "(N too small for DiskANN's micro-GB resolution)")


def estimate_build_ram_bytes(n, dim, elem_size, R):
    """diskann::estimate_ram_usage (include/index.h, 0.7.0)."""
    rounded_dim = (dim + 7) // 8 * 8
    data = n * rounded_dim * elem_size
    graph = n * R * 4 * GRAPH_SLACK_FACTOR
    locks = n * SIZEOF_STD_MUTEX
    outer = n * 8
    return OVERHEAD_FACTOR * (data + graph + locks + outer)


# ---------------------------------------------------------------- read-back

def read_pq_chunks(out_dir):
    """Chunk count from the compressed vectors and the pivots file; both must agree."""
    comp = os.path.join(out_dir, f"{PREFIX}_pq_compressed.bin")
    with open(comp, "rb") as f:
        npts, nchunks = (int(v) for v in np.frombuffer(f.read(8), dtype="<u4"))
    comp_size = os.path.getsize(comp)
    if comp_size != 8 + npts * nchunks:
        raise SystemExit(f"{comp}: size {comp_size} != 8 + {npts}*{nchunks}")

    piv = os.path.join(out_dir, f"{PREFIX}_pq_pivots.bin")
    with open(piv, "rb") as f:
        nr, nc = (int(v) for v in np.frombuffer(f.read(8), dtype="<u4"))
        offsets = np.frombuffer(f.read(8 * nr * nc), dtype="<u8").astype(np.int64)
        # offsets: [pivots, centroid, chunk_offsets, end]
        f.seek(int(offsets[0]))
        n_centers, pdim = (int(v) for v in np.frombuffer(f.read(8), dtype="<u4"))
        f.seek(int(offsets[2]))
        n_off, _ = (int(v) for v in np.frombuffer(f.read(8), dtype="<u4"))
        chunk_offsets = np.frombuffer(f.read(4 * n_off), dtype="<u4")
    return {
        "compressed_npts": npts,
        "compressed_chunks": nchunks,
        "pivots_centers": n_centers,
        "pivots_dim": pdim,
        "pivots_chunks": n_off - 1,
        "chunk_dims_min": int(np.diff(chunk_offsets).min()),
        "chunk_dims_max": int(np.diff(chunk_offsets).max()),
    }


# ---------------------------------------------------------------- child

def child(params_path):
    with open(params_path) as f:
        p = json.load(f)
    import diskannpy  # imported here so the parent never holds DiskANN state
    import resource
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    t0 = time.perf_counter()
    diskannpy.build_disk_index(
        data=p["data"],
        distance_metric=p["metric"],
        index_directory=p["out"],
        complexity=p["L"],
        graph_degree=p["R"],
        search_memory_maximum=p["search_memory_maximum"],
        build_memory_maximum=p["build_memory_maximum"],
        num_threads=p["threads"],
        pq_disk_bytes=0,
        vector_dtype=np.dtype(p["dtype"]).type,
        index_prefix=PREFIX,
    )
    build_s = time.perf_counter() - t0
    with open(p["result"], "w") as f:
        json.dump({"build_s": build_s, "rss_before_build_mb": rss_before}, f)


# ---------------------------------------------------------------- parent

def normalise_to(src, dst):
    x = binio.read_vectors(src)
    out = np.empty(x.shape, dtype=np.float32)
    step = 1 << 16
    for s in range(0, x.shape[0], step):
        blk = np.asarray(x[s:s + step], dtype=np.float32)
        nrm = np.linalg.norm(blk, axis=1, keepdims=True)
        nrm[nrm == 0] = 1.0
        out[s:s + step] = blk / nrm
    binio.write_vectors(dst, out)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--_child":
        child(sys.argv[2])
        return

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help=".fbin / .u8bin / .i8bin base vectors")
    ap.add_argument("--metric", choices=["l2", "ip", "cosine"], required=True)
    ap.add_argument("--out", required=True, help="index directory (created if missing)")
    ap.add_argument("--R", type=int, default=64, help="graph degree")
    ap.add_argument("--L", type=int, default=100, help="build complexity")
    ap.add_argument("--alpha", type=float, default=DISK_BUILD_ALPHA,
                    help="must be 1.2: diskannpy 0.7.0's disk build has no alpha parameter")
    ap.add_argument("--pq-bytes", type=int, default=32, help="in-RAM PQ bytes (= chunks) per vector")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="0 = all cores")
    ap.add_argument("--build-memory-gb", type=float, default=None,
                    help="override build_memory_maximum (default: 2x DiskANN's own estimate, >= 1)")
    ap.add_argument("--force", action="store_true", help="replace an existing index in --out")
    ap.add_argument("--partitioned", action="store_true",
                    help="expect DiskANN's partitioned (merged) build under --build-memory-gb, as basalt's "
                         "partitioned build is compared with it; without this flag a partitioned build is an error")
    a = ap.parse_args()
    if a.partitioned and a.build_memory_gb is None:
        raise SystemExit("--partitioned needs --build-memory-gb (the budget both builds get)")

    if abs(a.alpha - DISK_BUILD_ALPHA) > 1e-9:
        raise SystemExit(f"--alpha {a.alpha}: diskannpy 0.7.0 build_disk_index cannot set alpha; "
                         f"its disk build always uses {DISK_BUILD_ALPHA} (defaults::ALPHA)")

    dtype = np.dtype(binio.vector_dtype(a.data))
    n, dim = binio.read_header(a.data)
    if a.metric in ("ip", "cosine") and dtype != np.float32:
        raise SystemExit(f"DiskANN disk indices support {a.metric} only for float32 data")
    if a.L < a.R:
        print(f"warning: build L={a.L} < R={a.R}", file=sys.stderr)

    os.makedirs(a.out, exist_ok=True)
    existing = [f for f in os.listdir(a.out) if f.startswith(PREFIX + "_") or f == SIDE_FILE]
    if existing:
        if not a.force:
            raise SystemExit(f"{a.out} already holds an index ({len(existing)} files); use --force to replace it")
        for f in existing:
            os.remove(os.path.join(a.out, f))

    data_path = os.path.abspath(a.data)
    dap_metric = {"l2": "l2", "ip": "mips", "cosine": "l2"}[a.metric]
    tmp_data = None
    prep_s = 0.0
    if a.metric == "cosine":
        tmp_data = os.path.join(os.path.abspath(a.out), "cosine_normalised.fbin")
        t0 = time.perf_counter()
        normalise_to(a.data, tmp_data)
        prep_s = time.perf_counter() - t0
        data_path = tmp_data

    dim_eff = dim + 1 if dap_metric == "mips" else dim   # mips appends sqrt(M^2-|x|^2)
    search_mem = search_memory_for_pq_bytes(n, dim_eff, a.pq_bytes)
    est = estimate_build_ram_bytes(n, dim_eff, dtype.itemsize, a.R)
    build_mem = a.build_memory_gb if a.build_memory_gb else max(1.0, float("%.6f" % (2 * est / GIB + 1e-6)))
    phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if est > phys:
        print(f"warning: DiskANN estimates {est / GIB:.2f} GiB for a one-shot build, "
              f"more than the {phys / GIB:.1f} GiB of RAM", file=sys.stderr)

    log_path = os.path.join(a.out, "build.log")
    params_path = os.path.join(a.out, ".build_params.json")
    result_path = os.path.join(a.out, ".build_result.json")
    params = {
        "data": data_path, "metric": dap_metric, "out": os.path.abspath(a.out),
        "L": a.L, "R": a.R, "threads": a.threads, "dtype": dtype.name,
        "search_memory_maximum": search_mem, "build_memory_maximum": build_mem,
        "result": result_path,
    }
    with open(params_path, "w") as f:
        json.dump(params, f)

    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_child", params_path],
                                stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - t0
    with open(log_path, errors="replace") as f:
        log_text = f.read()
    if proc.returncode != 0:
        sys.stderr.write(log_text[-4000:])
        raise SystemExit(f"diskann build failed (exit {proc.returncode}); log: {log_path}")
    with open(result_path) as f:
        child_result = json.load(f)
    build_s = child_result["build_s"]
    os.remove(result_path)
    os.remove(params_path)
    if tmp_data:
        os.remove(tmp_data)

    m = re.search(r"Compressing (\d+)-dimensional data into (\d+) bytes per vector", log_text)
    log_chunks = int(m.group(2)) if m else None
    one_shot = "building in one shot" in log_text
    m = re.search(r"Indexing time: ([0-9.eE+-]+)", log_text)
    diskann_indexing_s = float(m.group(1)) if m else None

    pq = read_pq_chunks(a.out)
    chunks_ok = (pq["compressed_chunks"] == pq["pivots_chunks"] == a.pq_bytes
                 and (log_chunks is None or log_chunks == a.pq_bytes) and pq["compressed_npts"] == n)

    files = {f: os.path.getsize(os.path.join(a.out, f)) for f in sorted(os.listdir(a.out))
             if f.startswith(PREFIX + "_")}
    from importlib.metadata import version
    record = {
        "peer": "diskann",
        "diskannpy_version": version("diskannpy"),
        "data": os.path.abspath(a.data),
        "n": n, "dim": dim, "dtype": dtype.name,
        "metric": a.metric, "diskann_metric": dap_metric,
        "R": a.R, "L": a.L, "alpha": DISK_BUILD_ALPHA,
        "pq_bytes": a.pq_bytes, "pq_chunks": pq["compressed_chunks"], "pq_chunks_ok": chunks_ok,
        "pq_chunks_log": log_chunks,
        "search_memory_maximum_gb": search_mem,
        "build_memory_maximum_gb": build_mem,
        "build_ram_estimate_gb": round(est / GIB, 6),
        "one_shot": one_shot,
        "pq_disk_bytes": 0,
        "threads": a.threads,
        "build_s": round(build_s, 3),
        "wall_s": round(wall_s, 3),
        "prep_s": round(prep_s, 3),
        "diskann_indexing_s": diskann_indexing_s,
        "peak_rss_mb": round(ru.ru_maxrss / 1024.0, 1),
        # the child's peak before build_disk_index ran (interpreter + numpy + diskannpy)
        "rss_before_build_mb": round(child_result["rss_before_build_mb"], 1),
        "disk_index_bytes": files.get(f"{PREFIX}_disk.index"),
        "files": files,
        "log": os.path.abspath(log_path),
    }
    with open(os.path.join(a.out, SIDE_FILE), "w") as f:
        json.dump(record, f, indent=1)
    binio.emit(record)
    if not chunks_ok:
        raise SystemExit(f"PQ chunk count {pq} does not match --pq-bytes {a.pq_bytes}")
    if a.partitioned and one_shot:
        raise SystemExit("DiskANN built in one shot under --build-memory-gb; lower it to compare partitioned builds")
    if not a.partitioned and not one_shot:
        raise SystemExit("DiskANN partitioned the build (not one shot); raise --build-memory-gb")


if __name__ == "__main__":
    main()

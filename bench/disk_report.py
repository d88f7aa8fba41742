#!/usr/bin/env python3
"""Summarise one set of bench/disk.sh.

  python bench/disk_report.py DIR NAME [PYTHON_WITH_MATPLOTLIB]

Reads DIR/search.jsonl (one line per system, rep, thread count and L),
takes per (system, threads, L) the median of each figure over the reps,
and reads QPS (2 threads), mean latency (1 thread) and reads per query off
each median curve at recall@10 0.90 / 0.95 / 0.98 (linear between the two
list sizes that bracket the target; "-" where the curve never gets there).
Prints a markdown table with the ratios of basalt's pipelined search to
DiskANN's best width at each target, writes DIR/results.jsonl, and, given a
Python with matplotlib, DIR/recall_qps.png (every system, 2 threads).
"""

import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict

TARGETS = (0.90, 0.95, 0.98)


def at_recall(curve, target, key):
    prev = None
    for p in curve:
        if p["recall"] >= target:
            if prev is None or p["recall"] == prev["recall"]:
                return p[key]
            t = (target - prev["recall"]) / (p["recall"] - prev["recall"])
            return prev[key] + t * (p[key] - prev[key])
        prev = p
    return None


def fmt(v, nd=0):
    return "-" if v is None else f"{v:,.{nd}f}"


def main():
    d, name = sys.argv[1], sys.argv[2]
    py = sys.argv[3] if len(sys.argv) > 3 else None
    runs = defaultdict(lambda: defaultdict(list))
    for line in open(os.path.join(d, "search.jsonl")):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        runs[(r["system"], r["threads"])][r["L"]].append(r)
    curves = {}
    for key, by_l in runs.items():
        curve = []
        for l in sorted(by_l):
            rs = by_l[l]
            m = {"L": l, "reps": len(rs)}
            for k in ("recall", "qps", "latency_us_mean", "reads_mean", "io_us_mean", "cpu_us_mean",
                      "wasted_reads_mean", "hops_mean"):
                vals = [r[k] for r in rs if r.get(k) is not None]
                m[k] = statistics.median(vals) if vals else None
            curve.append(m)
        # Recall is not monotone in L by a hair sometimes; keep the walk in L order.
        curves[key] = curve
    systems = sorted({s for s, _ in curves})
    results = []
    for s in systems:
        row = {"set": name, "system": s}
        # Throughput-only systems (queries interleaved) run at 2 threads
        # only: their reads and best recall come from that curve.
        one = curves.get((s, 1)) or curves.get((s, 2), [])
        for t in TARGETS:
            row[f"qps2@{t}"] = at_recall(curves.get((s, 2), []), t, "qps")
            row[f"lat1@{t}"] = at_recall(curves.get((s, 1), []), t, "latency_us_mean")
            row[f"reads1@{t}"] = at_recall(one, t, "reads_mean")
        row["best_recall"] = max((p["recall"] for p in one), default=None)
        row["reps"] = min((p["reps"] for c in curves.values() for p in c), default=0)
        results.append(row)
    with open(os.path.join(d, "results.jsonl"), "w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    print(f"### {name}: medians of {results[0]['reps'] if results else 0} interleaved reps\n")
    print("| system | " + " | ".join(f"QPS@{t} (2 thr)" for t in TARGETS) + " | "
          + " | ".join(f"mean us@{t} (1 thr)" for t in TARGETS) + " | "
          + " | ".join(f"reads@{t}" for t in TARGETS) + " | best recall |")
    print("|---|" + "---:|" * 10)
    for r in results:
        print(f"| {r['system']} | " + " | ".join(fmt(r[f'qps2@{t}']) for t in TARGETS) + " | "
              + " | ".join(fmt(r[f'lat1@{t}']) for t in TARGETS) + " | "
              + " | ".join(fmt(r[f'reads1@{t}'], 1) for t in TARGETS) + f" | {fmt(r['best_recall'], 4)} |")
    by = {r["system"]: r for r in results}
    ours = [s for s in by if s.startswith("basalt")]
    disk = [s for s in by if s.startswith("diskann")]
    if ours and disk:
        print("\nRatios to DiskANN's best width at each target "
              "(QPS: higher is better; latency and reads: lower):\n")
        print("| system | target | QPS ratio (2 thr) | latency ratio (1 thr) | reads ratio |")
        print("|---|---|---:|---:|---:|")
    for name_ in ours if disk else []:
        p = by[name_]
        for t in TARGETS:
            qs = [by[s][f"qps2@{t}"] for s in disk if by[s][f"qps2@{t}"]]
            ls = [by[s][f"lat1@{t}"] for s in disk if by[s][f"lat1@{t}"]]
            rs = [by[s][f"reads1@{t}"] for s in disk if by[s][f"reads1@{t}"]]
            q = p[f"qps2@{t}"] / max(qs) if qs and p[f"qps2@{t}"] else None
            lt = p[f"lat1@{t}"] / min(ls) if ls and p[f"lat1@{t}"] else None
            rd = p[f"reads1@{t}"] / min(rs) if rs and p[f"reads1@{t}"] else None
            print(f"| {name_} | {t} | {fmt(q, 2)} | {fmt(lt, 2)} | {fmt(rd, 2)} |")
    if py:
        series = []
        for (s, t), c in sorted(curves.items()):
            if t == 2:
                path = os.path.join(d, f"median-{s}.jsonl")
                with open(path, "w") as f:
                    for p in c:
                        f.write(json.dumps({**p, "threads": 2, "k": 10}) + "\n")
                series += ["--curve", f"{s}={path}"]
        cmd = [py, os.path.join(os.path.dirname(__file__), "peers", "plot.py"), *series,
               "--out", os.path.join(d, "recall_qps.png"),
               "--title", f"{name}: recall@10 vs QPS, 2 threads", "--no-annotate"]
        subprocess.run(cmd, check=False)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Summarise one set of bench/inmemory.sh: medians, QPS at fixed recall, plot.

  python bench/inmemory_report.py DIR NAME THREADS

Reads DIR/builds.jsonl and DIR/search.jsonl (one line per system, rep and
list size), writes DIR/median-<system>.jsonl (median QPS and recall per list
size over the reps), DIR/results.jsonl (builds, then one line per system
with QPS at recall@10 0.90/0.95/0.98 and the best recall) and
DIR/recall_qps.png (every system on one plot, through bench/peers/plot.py),
and prints a markdown table.

QPS at a recall target is read off the median curve: the list sizes are
walked in increasing order and the first pair that brackets the target is
interpolated linearly; a curve that never reaches the target gives None.
"""

import json
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict

from disk_report import at_recall  # the same reading of a curve at a recall

TARGETS = (0.90, 0.95, 0.98)


def main():
    d, name, threads = sys.argv[1], sys.argv[2], sys.argv[3]
    builds = {}
    for line in open(os.path.join(d, "builds.jsonl")):
        b = json.loads(line)
        builds[b["system"]] = b
    runs = defaultdict(lambda: defaultdict(list))
    for line in open(os.path.join(d, "search.jsonl")):
        r = json.loads(line)
        runs[r["system"]][r["L"]].append(r)
    summary = []
    curves = []
    for system, by_l in runs.items():
        curve = []
        for l in sorted(by_l):
            rs = by_l[l]
            curve.append({"L": l, "k": 10, "threads": int(threads),
                          "recall": statistics.median(r["recall"] for r in rs),
                          "qps": statistics.median(r["qps"] for r in rs),
                          "reps": len(rs),
                          "peak_rss_mb": max(r.get("peak_rss_mb") or 0 for r in rs)})
        path = os.path.join(d, f"median-{system}.jsonl")
        with open(path, "w") as f:
            for p in curve:
                f.write(json.dumps(p) + "\n")
        curves.append((system, path))
        b = builds.get(re.sub(r"-mem(-[a-z0-9]+)?-R", "-R", system), {})
        summary.append({
            "set": name, "system": system, "threads": int(threads),
            **{f"qps_at_{t:.2f}": at_recall(curve, t, "qps") for t in TARGETS},
            "best_recall": max(p["recall"] for p in curve),
            "build_s": b.get("build_s"), "build_peak_rss_mb": b.get("peak_rss_mb"),
            "search_peak_rss_mb": max(p["peak_rss_mb"] for p in curve),
        })
    with open(os.path.join(d, "results.jsonl"), "w") as f:
        for b in builds.values():
            f.write(json.dumps({"set": name, "build": b}) + "\n")
        for s in summary:
            f.write(json.dumps(s) + "\n")
    fmt = lambda v, p=0: "-" if v is None else f"{v:,.{p}f}"  # noqa: E731
    print(f"\n### {name} ({threads} threads, medians)\n")
    print("| system | QPS @0.90 | QPS @0.95 | QPS @0.98 | best recall | build s | build RSS MB | search RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        print(f"| {s['system']} | {fmt(s['qps_at_0.90'])} | {fmt(s['qps_at_0.95'])} | "
              f"{fmt(s['qps_at_0.98'])} | {s['best_recall']:.4f} | {fmt(s['build_s'], 1)} | "
              f"{fmt(s['build_peak_rss_mb'])} | {fmt(s['search_peak_rss_mb'])} |")
    plot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "plot.py")
    args = [sys.executable, plot, "--out", os.path.join(d, "recall_qps.png"),
            "--title", f"{name}: in-memory recall@10 vs QPS ({threads} threads)"]
    for system, path in curves:
        args += ["--curve", f"{system}={path}"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()

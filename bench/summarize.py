#!/usr/bin/env python3
"""Summaries of bench/run.sh outputs (standard library only).

  summarize.py median FILE.jsonl   per-L medians of repeated search sweeps
  summarize.py report OUT_DIR      the markdown tables bench/README.md quotes
  summarize.py gate OUT_DIR [RESULTS_DIR]
                                   exits 1 when, against the last recorded results
                                   (bench/results/<set>_basalt.jsonl), a set's recall at
                                   a fixed L falls, or its reads at a fixed recall rise,
                                   by more than 1% (TOLERANCE)
"""
import json, os, statistics, sys

SETS = ("debian384", "docs384", "syn1m", "u8_500k")
KEYS = ["recall", "qps", "latency_us_mean", "latency_us_p50", "latency_us_p99",
        "reads_mean", "hops_mean", "cache_hits_mean"]


def load(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]


def median_rows(rows):
    by_l = {}
    for r in rows:
        by_l.setdefault(r["L"], []).append(r)
    out = []
    for l in sorted(by_l):
        rs = by_l[l]
        m = {k: rs[0].get(k) for k in ("L", "beam", "threads", "k")}
        for k in KEYS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            m[k] = statistics.median(vals) if vals else None
        m["runs"] = len(rs)
        out.append(m)
    return out


def interp_at(rows, target, key):
    """Linear interpolation of `key` at recall = target along the curve."""
    pts = sorted((r["recall"], r[key]) for r in rows if r.get(key) is not None)
    for (r0, v0), (r1, v1) in zip(pts, pts[1:]):
        if r0 <= target <= r1 and r1 > r0:
            return v0 + (v1 - v0) * (target - r0) / (r1 - r0)
    return None


def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def search_section(d, name, sfx, what):
    if not os.path.exists(f"{d}/basalt_median{sfx}.jsonl"):
        return []
    b = load(f"{d}/basalt_median{sfx}.jsonl")
    k = load(f"{d}/diskann_median{sfx}.jsonl")
    lines = [f"## {name}: search, {what} (medians of {b[0]['runs']} interleaved runs)", "",
             "| L | basalt recall | DiskANN recall | basalt QPS | DiskANN QPS | basalt mean us | DiskANN mean us | basalt p99 us | basalt reads | DiskANN reads | basalt hops |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    kd = {r["L"]: r for r in k}
    for r in b:
        o = kd.get(r["L"], {})
        lines.append(f"| {r['L']} | {fmt(r['recall'], 4)} | {fmt(o.get('recall'), 4)} | {fmt(r['qps'])} | {fmt(o.get('qps'))} | "
                     f"{fmt(r['latency_us_mean'])} | {fmt(o.get('latency_us_mean'))} | {fmt(r['latency_us_p99'])} | "
                     f"{fmt(r['reads_mean'])} | {fmt(o.get('reads_mean'))} | {fmt(r['hops_mean'])} |")
    lines.append("")
    for target in (0.90, 0.95, 0.98):
        vals = {}
        for key in ("qps", "latency_us_mean", "reads_mean"):
            vals[key] = (interp_at(b, target, key), interp_at(k, target, key))
        if vals["qps"][0] is None or vals["qps"][1] is None:
            lines.append(f"At recall@10 = {target}: not bracketed by both sweeps.")
            continue
        (bq, kq), (bl, kl), (br, kr) = vals["qps"], vals["latency_us_mean"], vals["reads_mean"]
        lines.append(f"At recall@10 = {target} (interpolated): reads {fmt(br)} vs {fmt(kr)} (ratio {br / kr:.3f}), "
                     f"QPS {fmt(bq)} vs {fmt(kq)} (ratio {bq / kq:.2f}), mean latency {fmt(bl)} vs {fmt(kl)} us (ratio {bl / kl:.2f}).")
    lines.append("")
    return lines


def report(out):
    lines = []
    if os.path.exists(f"{out}/kernels.md"):
        lines += ["## Distance kernels (ns per distance, median)", "", open(f"{out}/kernels.md").read()]
    if os.path.exists(f"{out}/gt.jsonl"):
        rows = load(f"{out}/gt.jsonl")
        b = [r["run"]["seconds"] for r in rows if r.get("peer") == "basalt"]
        f = [r["search_s"] for r in rows if r.get("peer") == "faiss"]
        if b and f:
            mb, mf = statistics.median(b), statistics.median(f)
            lines += ["## Exact ground truth, 1M x 128 f32, 10K queries, k=100, l2", "",
                      "| engine | runs (s) | median (s) |", "|---|---|---:|",
                      f"| basalt gt | {', '.join(fmt(x, 2) for x in b)} | {mb:.2f} |",
                      f"| faiss IndexFlatL2 | {', '.join(fmt(x, 2) for x in f)} | {mf:.2f} |", "",
                      f"basalt / faiss time ratio: **{mb / mf:.2f}** (target <= 2.0)", ""]
        if os.path.exists(f"{out}/gt_agreement.txt"):
            lines += ["Agreement (basalt ids scored against faiss's, tie-aware): "
                      + open(f"{out}/gt_agreement.txt").read().strip(), ""]
    for name in SETS:
        d = f"{out}/{name}"
        if not os.path.exists(f"{d}/basalt_build.json"):
            continue
        try:
            bb = json.load(open(f"{d}/basalt_build.json"))
        except ValueError:
            continue  # still running or failed: nothing to report
        db = json.load(open(f"{d}/diskann_build.json")) if os.path.exists(f"{d}/diskann_build.json") else {}
        phases = ", ".join(f"{p} {s:.1f}s" for p, s in bb["phases"])
        lines += [f"## {name}: build", "",
                  "| engine | wall (s) | peak RSS (MiB) | phases |", "|---|---:|---:|---|",
                  f"| basalt | {bb['total_s']:.1f} | {(bb.get('peak_rss_bytes') or 0) / 2**20:.0f} | {phases}; degree mean {bb['degree_mean']:.1f} |",
                  f"| DiskANN | {fmt(db.get('build_s'))} | {fmt(db.get('peak_rss_mb'), 0)} | one piece: {db.get('one_shot')}, PQ chunks {db.get('pq_chunks')} |", ""]
        if db.get("build_s"):
            lines += [f"basalt / DiskANN build time ratio: **{bb['total_s'] / db['build_s']:.2f}**", ""]
        for sfx, what in (("", "basalt hot-list cache vs DiskANN sample-query cache"),
                          ("_bfs", "both BFS caches")):
            lines += search_section(d, name, sfx, what)
    print("\n".join(lines))


TOLERANCE = 0.01
GATE_RECALLS = (0.90, 0.95)


def gate(out, results="bench/results"):
    """Compares this run's basalt medians with the recorded ones; returns failures."""
    failures, checked = [], 0
    for name in SETS:
        new_p, old_p = f"{out}/{name}/basalt_median.jsonl", f"{results}/{name}_basalt.jsonl"
        if not (os.path.exists(new_p) and os.path.exists(old_p)):
            continue
        new, old = load(new_p), load(old_p)
        old_by_l = {r["L"]: r for r in old}
        for r in new:
            o = old_by_l.get(r["L"])
            if o is None or r.get("recall") is None or o.get("recall") is None:
                continue
            checked += 1
            if r["recall"] < o["recall"] * (1 - TOLERANCE):
                failures.append(f"{name} L={r['L']}: recall {r['recall']:.4f} < recorded {o['recall']:.4f} - 1%")
        for target in GATE_RECALLS:
            nr, orr = interp_at(new, target, "reads_mean"), interp_at(old, target, "reads_mean")
            if nr is None or orr is None:
                continue
            checked += 1
            if nr > orr * (1 + TOLERANCE):
                failures.append(f"{name} at recall {target}: reads {nr:.1f} > recorded {orr:.1f} + 1%")
    return failures, checked


if __name__ == "__main__":
    if sys.argv[1] == "median":
        for r in median_rows(load(sys.argv[2])):
            print(json.dumps(r))
    elif sys.argv[1] == "report":
        report(sys.argv[2])
    elif sys.argv[1] == "gate":
        fails, checked = gate(sys.argv[2], *(sys.argv[3:4]))
        for f in fails:
            print(f"REGRESSION: {f}")
        print(f"gate: {checked} comparisons, {len(fails)} regressions")
        sys.exit(1 if fails else 0)
    else:
        sys.exit(f"unknown command {sys.argv[1]!r}: median, report or gate")

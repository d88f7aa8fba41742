#!/usr/bin/env python3
"""Turns criterion's estimates for the `distance` bench into a markdown table:
ns per distance (median) per kernel level, and the speed-up of the best level
over the scalar reference loop. Standard library only."""
import json, os, sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
rows = {}
for group in sorted(os.listdir(root)):
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir) or "_" not in group or group == "report":
        continue
    for level in os.listdir(gdir):
        ldir = os.path.join(gdir, level)
        if not os.path.isdir(ldir) or level == "report":
            continue
        for dim in os.listdir(ldir):
            est = os.path.join(ldir, dim, "new", "estimates.json")
            if os.path.exists(est):
                with open(est) as f:
                    ns = json.load(f)["median"]["point_estimate"]
                rows.setdefault((group, int(dim)), {})[level] = ns

print("| kernel | d | scalar ns | avx2 ns | avx512 ns | best speed-up |")
print("|---|---:|---:|---:|---:|---:|")
for (group, dim) in sorted(rows):
    r = rows[(group, dim)]
    s = r.get("scalar")
    best = min(v for k, v in r.items() if k != "scalar") if len(r) > 1 else None
    fmt = lambda v: f"{v:.1f}" if v is not None else "-"
    sp = f"{s / best:.1f}x" if s and best else "-"
    print(f"| {group} | {dim} | {fmt(s)} | {fmt(r.get('avx2'))} | {fmt(r.get('avx512'))} | {sp} |")

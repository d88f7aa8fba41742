#!/usr/bin/env python3
"""Recall@k (x) vs QPS (y, log) for basalt and its peers, from JSON-lines files.

  bench/.venv-faiss/bin/python bench/peers/plot.py \
      --basalt b.jsonl --diskann d.jsonl --out recall_qps.png [--title T] \
      [--curve LABEL=FILE ...] [--no-annotate]

Every line of a file that is a JSON object with numeric "recall" and "qps"
is a point (other lines -- build records, logs -- are skipped). Points are
joined in order of L when present (else recall) and labelled with their L.
Any curve may be omitted, but at least one must be given.
"""

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLES = {
    "basalt": dict(color="tab:red", marker="o"),
    "diskann": dict(color="tab:blue", marker="s"),
}
FALLBACK = ["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:gray"]


def load(path):
    pts = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(d.get("recall"), (int, float)) and isinstance(d.get("qps"), (int, float)):
                pts.append(d)
    if not pts:
        raise SystemExit(f"{path}: no JSON lines with recall and qps")
    pts.sort(key=lambda d: (d.get("L", 0) or 0, d["recall"]))
    return pts


def describe(pts):
    """Label suffix from the parameters that are constant along the curve."""
    bits = []
    for key, fmt in (("beam", "W={}"), ("threads", "T={}"), ("cache_nodes", "cache={}")):
        vals = {d.get(key) for d in pts}
        if len(vals) == 1 and None not in vals:
            bits.append(fmt.format(vals.pop()))
    return f" ({', '.join(bits)})" if bits else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--basalt")
    ap.add_argument("--diskann")
    ap.add_argument("--curve", action="append", default=[], metavar="LABEL=FILE", help="extra curve")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--no-annotate", action="store_true", help="do not label points with L")
    a = ap.parse_args()

    curves = []
    if a.basalt:
        curves.append(("basalt", a.basalt))
    if a.diskann:
        curves.append(("diskann", a.diskann))
    for c in a.curve:
        label, sep, path = c.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--curve wants LABEL=FILE, got {c!r}")
        curves.append((label, path))
    if not curves:
        raise SystemExit("give at least one of --basalt, --diskann, --curve")

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    ks = set()
    for i, (label, path) in enumerate(curves):
        pts = load(path)
        ks.update(d.get("k") for d in pts if d.get("k") is not None)
        style = STYLES.get(label, dict(color=FALLBACK[i % len(FALLBACK)], marker="^"))
        xs = [d["recall"] for d in pts]
        ys = [d["qps"] for d in pts]
        ax.plot(xs, ys, linestyle="-", linewidth=1.6, markersize=5, label=label + describe(pts), **style)
        if not a.no_annotate:
            for d in pts:
                if d.get("L") is not None:
                    ax.annotate(f"L{d['L']}", (d["recall"], d["qps"]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7, color=style["color"])

    k = ks.pop() if len(ks) == 1 else None
    ax.set_xlabel(f"recall@{k}" if k else "recall")
    ax.set_ylabel("queries per second (log)")
    ax.set_yscale("log")
    ax.grid(True, which="both", linestyle=":", linewidth=0.6)
    ax.legend(loc="best", fontsize=9)
    if a.title:
        ax.set_title(a.title)
    fig.tight_layout()
    fig.savefig(a.out)
    print(json.dumps({"plot": a.out, "curves": [c[0] for c in curves]}))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""One PNG per `adamas eval` task, from the rows in DIR/<task>.jsonl (written by scripts/eval).

    python3 scripts/eval_plots.py DIR OUTDIR

passkey.png: accuracy by length, one line per variant. ppl.png: cumulative perplexity by tokens. ruler.png: mean
score per task and variant. recall.png: attention mass and top-k overlap by budget (one line per method and
thresholds mode, one panel per length), and recall_layers.png: the mass by layer at each budget of Adamas.
"""
import json
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(d, task):
    path = os.path.join(d, task + ".jsonl")
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a row cut short by an interrupted run
    return rows


def mean(xs):
    return sum(xs) / len(xs)


def by_variant(rows, x_key, y):
    """{variant: sorted [(x, mean y)]}"""
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["variant"]][r[x_key]].append(y(r))
    return {v: sorted((x, mean(ys)) for x, ys in pts.items()) for v, pts in acc.items()}


def style(variant):
    return {"linewidth": 2.5, "color": "black"} if variant == "full" else {"linewidth": 1.5}


def decorate(ax, xlabel, ylabel, title):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def line_plot(series, xlabel, ylabel, title, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in sorted(series, key=lambda v: (v != "full", v)):
        xs, ys = zip(*series[v])
        ax.plot(xs, ys, marker="o", label=v, **style(v))
    ax.set_xscale("log", base=2)
    decorate(ax, xlabel, ylabel, title)
    save(fig, path)


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    made = []
    rows = load(src, "passkey")
    if rows:
        s = by_variant(rows, "length", lambda r: float(r["correct"]))
        line_plot(s, "prompt tokens", "pass key accuracy", "Pass key retrieval (SmolLM2-135M)",
                  os.path.join(out, "passkey.png"))
        made.append("passkey.png")
    rows = load(src, "ppl")
    if rows:
        s = by_variant(rows, "length", lambda r: r["ppl"])
        line_plot(s, "tokens (each a decode step)", "cumulative perplexity", "Perplexity, token by token",
                  os.path.join(out, "ppl.png"))
        made.append("ppl.png")
    rows = load(src, "ruler")
    if rows:
        tasks = sorted({r["ruler_task"] for r in rows})
        variants = sorted({r["variant"] for r in rows}, key=lambda v: (v != "full", v))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        width = 0.8 / len(variants)
        for i, v in enumerate(variants):
            ys = [mean([r["score"] for r in rows if r["variant"] == v and r["ruler_task"] == t] or [0]) for t in tasks]
            ax.bar([j + i * width for j in range(len(tasks))], ys, width, label=v)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks)
        decorate(ax, "task", "mean score", "RULER-style tasks (all lengths)")
        save(fig, os.path.join(out, "ruler.png"))
        made.append("ruler.png")
    rows = load(src, "recall")
    if rows:
        lengths = sorted({r["length"] for r in rows})
        fig, axes = plt.subplots(2, len(lengths), figsize=(5 * len(lengths), 7), squeeze=False)
        for j, n in enumerate(lengths):
            sub = [r for r in rows if r["length"] == n]
            for i, (key, label) in enumerate([("mass", "exact attention mass kept"), ("overlap", "overlap with exact top-k")]):
                acc = defaultdict(lambda: defaultdict(list))
                for r in sub:
                    name = r["method"] + ("-cal" if r["method"] == "adamas" and r["thresholds"] == "calibrated" else "")
                    acc[name][r["budget"]].append(r[key])
                ax = axes[i][j]
                for name in sorted(acc):
                    xs = sorted(acc[name])
                    ax.plot(xs, [mean(acc[name][x]) for x in xs], marker="o", label=name)
                ax.set_xscale("log", base=2)
                decorate(ax, "budget (tokens)", label, f"{n} tokens, sparse layers")
        save(fig, os.path.join(out, "recall.png"))
        made.append("recall.png")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        n = lengths[-1]
        for r in sorted((r for r in rows if r["length"] == n and r["method"] == "adamas" and r["thresholds"] == "fixed"),
                        key=lambda r: r["budget"]):
            ax.plot(range(len(r["layer_mass"])), r["layer_mass"], marker=".", label=f"budget {r['budget']}")
        decorate(ax, "layer", "exact attention mass kept", f"Adamas (fixed thresholds) by layer, {n} tokens")
        save(fig, os.path.join(out, "recall_layers.png"))
        made.append("recall_layers.png")
    print("eval_plots: " + (", ".join(made) if made else "no rows") + " in " + out, file=sys.stderr)


if __name__ == "__main__":
    main()

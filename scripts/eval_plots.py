#!/usr/bin/env python3
"""One PNG per `adamas eval` task, from the rows in DIR/<task>.jsonl (written by scripts/eval).

    python3 scripts/eval_plots.py DIR OUTDIR

passkey.png and ppl.png: the paper's comparison (per-head selection, no forced sink/window), by length at budget 64
(passkey) / 128 (ppl) and by budget at 2K tokens, one line per method and thresholds mode. ruler.png: mean
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


def plain(r):
    """Rows of the paper's comparison: per-head selection, no forced sink/window (the variants have own tables)."""
    return r.get("group", "per-head") == "per-head" and not r.get("sink", 0) and not r.get("window", 0)


def method_label(r):
    if r["method"] == "adamas":
        return "adamas, calibrated" if r.get("thresholds") == "calibrated" else "adamas, fixed"
    return r["method"]


def two_panels(rows, y, ylabel, title, budget, length, path, log_y=False):
    """Left: by length at one budget; right: by budget at one length (full attention as a level line)."""
    rows = [r for r in rows if plain(r)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    at_budget = by_variant([dict(r, variant=method_label(r)) for r in rows if r["method"] == "full" or
                            r["budget"] == budget], "length", y)
    for v in sorted(at_budget, key=lambda v: (v != "full", v)):
        xs, ys = zip(*at_budget[v])
        left.plot(xs, ys, marker="o", label=v, **style(v))
    left.set_xscale("log", base=2)
    decorate(left, "prompt tokens", ylabel, f"{title}: budget {budget}")
    at_length = [r for r in rows if r["length"] == length]
    full = [y(r) for r in at_length if r["method"] == "full"]
    sweep = by_variant([dict(r, variant=method_label(r)) for r in at_length if r["method"] != "full"], "budget", y)
    for v in sorted(sweep):
        xs, ys = zip(*sweep[v])
        right.plot(xs, ys, marker="o", label=v, **style(v))
    if full:
        right.axhline(mean(full), label="full", **style("full"))
    right.set_xscale("log", base=2)
    decorate(right, "budget (tokens)", ylabel, f"{title}: {length} tokens")
    for ax in (left, right):
        if log_y:
            ax.set_yscale("log")
    save(fig, path)


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    made = []
    rows = load(src, "passkey")
    if rows:
        two_panels(rows, lambda r: float(r["correct"]), "pass key accuracy", "Pass key retrieval (SmolLM2-135M)",
                   64, 2048, os.path.join(out, "passkey.png"))
        made.append("passkey.png")
    rows = load(src, "ppl")
    if rows:
        two_panels(rows, lambda r: r["ppl"], "cumulative perplexity", "Perplexity, token by token", 128, 2048,
                   os.path.join(out, "ppl.png"), log_y=True)
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

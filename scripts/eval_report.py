#!/usr/bin/env python3
"""Regenerates the accuracy section of docs/results.md (between its eval markers) from the markdown tables that
`adamas eval` wrote (DIR/<task>.md) and the plots of scripts/eval_plots.py; copies each task's CSV beside the plots.
PLOTDIR/notes.md, when present, is the hand-written reading of the run, placed above the tables.

    python3 scripts/eval_report.py DIR PLOTDIR docs/results.md GRID
"""
import os
import shutil
import subprocess
import sys

BEGIN = "<!-- eval:begin (scripts/eval writes this section) -->"
END = "<!-- eval:end -->"
TASKS = [
    ("passkey", "Pass key retrieval", ["passkey.png"]),
    ("ppl", "Perplexity, every token a decode step", ["ppl.png"]),
    ("recall", "Attention recall of the selection", ["recall.png", "recall_layers.png"]),
    ("ruler", "RULER-style synthetic tasks", ["ruler.png"]),
]


def main():
    src, plots, doc, grid = sys.argv[1:5]
    rel = os.path.relpath(plots, os.path.dirname(doc))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    parts = [BEGIN, "## Accuracy (`adamas eval`, issue 4)", "",
             f"Made by `scripts/eval --{grid}` (commit {commit}); every table names the `adamas eval` command that "
             "wrote it, the model, the text and the date. Raw rows: the CSV files in "
             f"`{rel}/`. Budgets are tokens per query head; prefill is dense; the first 2 layers decode densely.", ""]
    notes = os.path.join(plots, "notes.md")  # the hand-written reading of the run (targets met or missed)
    if os.path.exists(notes):
        with open(notes) as f:
            parts += [f.read().rstrip(), ""]
    for task, title, images in TASKS:
        md = os.path.join(src, task + ".md")
        if not os.path.exists(md) or not os.path.exists(os.path.join(src, task + ".jsonl")):
            continue  # not run (yet)
        parts += [f"### {title}", ""]
        with open(md) as f:
            parts.append(f.read().rstrip())
        parts.append("")
        for img in images:
            if os.path.exists(os.path.join(plots, img)):
                parts += [f"![{task}]({rel}/{img})", ""]
        csv = os.path.join(src, task + ".csv")
        if os.path.exists(csv):
            shutil.copy(csv, os.path.join(plots, task + ".csv"))
    parts.append(END)
    section = "\n".join(parts) + "\n"
    text = open(doc).read() if os.path.exists(doc) else "# Results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        # Hand-written notes below the generated section stay where they are.
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(doc, "w") as f:
        f.write(text)
    print(f"eval_report: {doc} updated", file=sys.stderr)


if __name__ == "__main__":
    main()

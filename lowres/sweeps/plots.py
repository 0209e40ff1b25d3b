"""Figures for ``lowres report``: PNG files readable at a glance.

Conventions of the few-shot literature: k on a log axis (k = 0 at the left of a symlog
axis, so zero-shot sits on the same curve), mean lines with +-1 std bands over seeds,
labelled axes with units, one legend per figure, values written into heatmap cells.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

AVERAGE = "avg"


def _languages(rows: list[dict[str, Any]]) -> list[str]:
    languages = sorted({r["language"] for r in rows} - {AVERAGE})
    return languages + ([AVERAGE] if any(r["language"] == AVERAGE for r in rows) else [])


def plot_score_vs_k(rows: list[dict[str, Any]], task: str, metric: str, out: Path) -> Path:
    """One panel per language (and the average), one line per method with a +-std band."""
    languages = _languages(rows)
    methods = sorted({r["method"] for r in rows})
    ks = sorted({r["k"] for r in rows})
    columns = min(len(languages), 4)
    lines = math.ceil(len(languages) / columns)
    figure, axes = plt.subplots(
        lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False, sharey=True
    )
    colours = plt.get_cmap("tab10")
    for panel, language in zip(axes.flat, languages, strict=False):
        for index, method in enumerate(methods):
            points = sorted(
                (r["k"], r["mean"], r["std"] or 0.0)
                for r in rows
                if r["method"] == method and r["language"] == language
            )
            if not points:
                continue
            k, mean, std = map(np.array, zip(*points, strict=True))
            colour = colours(index % 10)
            panel.plot(k, mean, marker="o", color=colour, label=method)
            panel.fill_between(k, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        panel.set_xscale("symlog", linthresh=1)
        panel.set_xticks(ks)
        panel.set_xticklabels([str(k) for k in ks])
        panel.set_title("average over languages" if language == AVERAGE else language)
        panel.set_xlabel("k (target-language training examples)")
        panel.grid(alpha=0.3)
    for panel in axes[:, 0]:
        panel.set_ylabel(f"{metric} (0-100)")
    for panel in list(axes.flat)[len(languages) :]:
        panel.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(methods), 4), frameon=False)
    figure.suptitle(f"{task}: {metric} vs k (mean ± std over seeds)")
    figure.tight_layout(rect=(0, 0.08 + 0.03 * (len(methods) > 4), 1, 0.95))
    path = out / f"{task}_score_vs_k.png"
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def plot_heatmaps(rows: list[dict[str, Any]], task: str, metric: str, out: Path) -> Path:
    """Language x method, one panel per k, the mean score written in each cell."""
    languages = _languages(rows)
    methods = sorted({r["method"] for r in rows})
    ks = sorted({r["k"] for r in rows})
    means = {(r["method"], r["k"], r["language"]): r["mean"] for r in rows}
    values = [v for v in means.values()]
    low, high = min(values), max(values)
    width = max(3.0, 0.9 * len(languages) + 2.2)
    height = max(2.0, 0.45 * len(methods) + 1.2)
    figure, axes = plt.subplots(1, len(ks), figsize=(width * len(ks), height), squeeze=False)
    for panel, k in zip(axes[0], ks, strict=True):
        grid = np.array([[means.get((m, k, lang), np.nan) for lang in languages] for m in methods])
        image = panel.imshow(grid, cmap="viridis", vmin=low, vmax=high, aspect="auto")
        panel.set_xticks(range(len(languages)), languages)
        panel.set_yticks(range(len(methods)), methods if k == ks[0] else [""] * len(methods))
        panel.set_xlabel("language")
        panel.set_title(f"k = {k}")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                shade = "black" if value > low + 0.6 * (high - low) else "white"
                panel.text(j, i, f"{value:.1f}", ha="center", va="center", color=shade)
    figure.colorbar(image, ax=axes[0].tolist(), label=f"{metric} (0-100)")
    # Above the panel titles whatever the figure height (suptitle's y is a height fraction).
    figure.suptitle(
        f"{task}: {metric} by language and method (mean over seeds)", y=1.0 + 0.45 / height
    )
    path = out / f"{task}_heatmap.png"
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_gxlt(tables: list[dict[str, Any]], task: str, method: str, k: int, out: Path) -> Path:
    """MLQA G-XLT: context x question F1, averaged over the seeds' tables."""
    contexts = tables[0]["context_languages"]
    questions = tables[0]["question_languages"]

    def mean_f1(context: str, question: str) -> float:
        values = [t["f1"][context][question] for t in tables]
        present = [v for v in values if v is not None]
        return float(np.mean(present)) if present else np.nan  # pair not evaluated

    grid = np.array([[mean_f1(c, q) for q in questions] for c in contexts])
    figure, panel = plt.subplots(figsize=(1.0 * len(questions) + 2.5, 0.8 * len(contexts) + 1.5))
    image = panel.imshow(grid, cmap="viridis", aspect="auto")
    panel.set_xticks(range(len(questions)), questions)
    panel.set_yticks(range(len(contexts)), contexts)
    panel.set_xlabel("question language")
    panel.set_ylabel("context language")
    middle = np.nanmin(grid) + 0.6 * (np.nanmax(grid) - np.nanmin(grid))
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            panel.text(
                j,
                i,
                f"{value:.1f}",
                ha="center",
                va="center",
                color="black" if value > middle else "white",
            )
    figure.colorbar(image, ax=panel, label="F1 (0-100)")
    panel.set_title(f"{task} G-XLT F1: {method}, k = {k} ({len(tables)} seed(s))")
    safe = "".join(c if c.isalnum() else "_" for c in method)
    path = out / f"{task}_gxlt_{safe}_k{k}.png"
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)
    return path

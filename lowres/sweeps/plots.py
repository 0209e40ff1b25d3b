"""Figures for ``lowres report``: PNG files readable at a glance.

Conventions of the few-shot literature: k on a log axis (k = 0 at the left of a symlog
axis, so zero-shot sits on the same curve), mean lines with +-1 std bands over seeds,
labelled axes with units, one legend per figure, values written into heatmap cells.

So that a reader is not misled: the y axis starts at 0 and spans at least 20 points (a
1-point seed wobble must not fill the panel); the untrained floor and, for classification,
the majority class are drawn as reference lines; a point from one seed has an open marker
(no spread is known); series are offset sideways by a few points and differ in marker and
line style, so identical scores do not hide each other.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

AVERAGE = "avg"
MARKERS = "osD^vP*Xh<>"
STYLES = ("-", "--", "-.", ":")
REFERENCE_STYLE = {"untrained": ("dimgray", (0, (2, 2))), "majority class": ("firebrick", ":")}
MIN_SPAN = 20.0  # points of the 0-100 scale a panel always shows


def _languages(rows: list[dict[str, Any]]) -> list[str]:
    languages = sorted({r["language"] for r in rows} - {AVERAGE})
    return languages + ([AVERAGE] if any(r["language"] == AVERAGE for r in rows) else [])


def _y_limits(rows: list[dict[str, Any]], refs: dict[str, dict[str, float]]) -> tuple[float, float]:
    """0 to the highest mean + std (or reference), at least MIN_SPAN, at most 100."""
    tops = [r["mean"] + (r["std"] or 0.0) for r in rows]
    tops += [v for lang in refs.values() for v in lang.values()]
    top = max([*tops, 0.0])
    return 0.0, min(100.0, max(MIN_SPAN, math.ceil((top + 2) / 5) * 5))


def _reference_average(refs: dict[str, dict[str, float]], languages: list[str]) -> dict:
    """The reference lines of the language-average panel: means over the languages shown."""
    names = {n for lang in languages if lang in refs for n in refs[lang]}
    out = {}
    for name in names:
        values = [refs[lang][name] for lang in languages if name in refs.get(lang, {})]
        if len(values) == len(languages):
            out[name] = float(np.mean(values))
    return out


def _series(figure, panel, index: int, count: int, x, mean, std, n, label: str, colour) -> None:
    """One line with its +-std band, offset sideways so equal series stay visible."""
    shift = (index - (count - 1) / 2) * 3.0  # points
    transform = offset_copy(panel.transData, fig=figure, x=shift, y=0, units="points")
    marker = MARKERS[index % len(MARKERS)]
    style = STYLES[(index // 10) % len(STYLES)]
    panel.plot(
        x, mean, linestyle=style, marker=marker, markersize=5, color=colour, label=label,
        transform=transform,
    )  # fmt: skip
    panel.fill_between(
        x, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0, transform=transform
    )
    # Caps as well as the band: a band is invisible where a series has a single x.
    panel.errorbar(
        x, mean, yerr=std, fmt="none", ecolor=colour, elinewidth=0.8, capsize=2,
        transform=transform,
    )  # fmt: skip
    single = n < 2  # drawn over with an open marker: no spread is known for these points
    panel.scatter(
        x[single], mean[single], marker=marker, facecolors="white", edgecolors=colour, s=30,
        zorder=3, transform=transform,
    )  # fmt: skip


def _x_range(panel, values: list[float], linthresh: float | None) -> None:
    """Room on both sides for the sideways offsets (autoscaling ignores them)."""
    low, high = min(values), max(values)
    if linthresh is None:
        pad = 0.08 * ((high - low) or max(abs(high), 1.0))
        panel.set_xlim(low - pad, high + pad)
    else:
        panel.set_xlim(low - 0.5 * linthresh if low <= 0 else low / 1.5, high * 1.5)


def _references(panel, refs: dict[str, float]) -> None:
    for name, value in sorted(refs.items()):
        colour, style = REFERENCE_STYLE.get(name, ("black", ":"))
        panel.axhline(value, color=colour, linestyle=style, linewidth=1.2, label=name)


def _finish(figure, axes, count: int, metric: str, title: str, rows, refs, languages) -> None:
    low, high = _y_limits(rows, refs)
    for panel in axes.flat:
        panel.set_ylim(low, high)
    for panel in axes[:, 0]:
        panel.set_ylabel(f"{metric} (0-100)")
    for panel in list(axes.flat)[count:]:
        panel.set_visible(False)
    handles, labels = [], []
    for panel in list(axes.flat)[:count]:
        for handle, label in zip(*panel.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if any(r["n"] < 2 for r in rows):
        handles.append(
            Line2D([], [], marker="o", linestyle="", markerfacecolor="white", color="gray")
        )
        labels.append("open marker: one seed (no spread)")
    columns = min(len(labels), 4)
    figure.legend(handles, labels, loc="lower center", ncol=columns, frameon=False)
    figure.suptitle(title)
    legend_lines = math.ceil(len(labels) / columns)
    figure.tight_layout(rect=(0, min(0.4, 0.05 + 0.04 * legend_lines), 1, 0.95))


def _language_panels(languages: list[str], series: int):
    """A grid of panels, one per language, at most 4 a row, with room below for a legend of
    ``series`` entries; the panels share their y axis."""
    columns = min(len(languages), 4)
    lines = math.ceil(len(languages) / columns)
    return plt.subplots(
        lines, columns, figsize=(4.2 * columns, 3.4 * lines + 0.3 * series / 4 + 0.6),
        squeeze=False, sharey=True,
    )  # fmt: skip


def plot_score_vs_k(
    rows: list[dict[str, Any]],
    task: str,
    metric: str,
    out: Path,
    refs: dict[str, dict[str, float]] | None = None,
) -> Path:
    """One panel per language (and the average), one line per method with a +-std band."""
    refs = refs or {}
    languages = _languages(rows)
    methods = sorted({r["method"] for r in rows})
    ks = sorted({r["k"] for r in rows})
    figure, axes = _language_panels(languages, len(methods))
    colours = plt.get_cmap("tab10")
    panel_refs = {**refs, AVERAGE: _reference_average(refs, languages[:-1])}
    for panel, language in zip(axes.flat, languages, strict=False):
        for index, method in enumerate(methods):
            points = sorted(
                (r["k"], r["mean"], r["std"] or 0.0, r["n"])
                for r in rows
                if r["method"] == method and r["language"] == language
            )
            if not points:
                continue
            k, mean, std, n = map(np.array, zip(*points, strict=True))
            _series(
                figure, panel, index, len(methods), k, mean, std, n, method, colours(index % 10)
            )
        _references(panel, panel_refs.get(language, {}))
        panel.set_xscale("symlog", linthresh=1)
        _x_range(panel, ks, 1.0)
        panel.set_xticks(ks)
        panel.set_xticklabels([str(k) for k in ks])
        panel.set_title("average over languages" if language == AVERAGE else language)
        panel.set_xlabel("k (target-language training examples)")
        panel.grid(alpha=0.3)
    title = f"{task}: {metric} vs k (mean ± std over seeds)"
    _finish(figure, axes, len(languages), metric, title, rows, refs, languages)
    path = out / f"{task}_score_vs_k.png"
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def plot_score_vs_value(
    rows: list[dict[str, Any]],
    task: str,
    key: str,
    metric: str,
    out: Path,
    refs: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Score against a swept numeric key (lambda, prompt length): a line per (series, k)."""
    refs = refs or {}
    languages = _languages(rows)
    lines_of = sorted({(r["series"], r["k"]) for r in rows})
    values = sorted({r["value"] for r in rows})
    figure, axes = _language_panels(languages, len(lines_of))
    colours = plt.get_cmap("tab10")
    positive = [v for v in values if v > 0]
    # A log axis when the values span a decade or more (lambda 0.01..1); 0 stays on it
    # through the linear stretch below the smallest positive value.
    log = len(positive) >= 2 and max(positive) / min(positive) >= 10
    panel_refs = {**refs, AVERAGE: _reference_average(refs, languages[:-1])}
    for panel, language in zip(axes.flat, languages, strict=False):
        for index, (series, k) in enumerate(lines_of):
            points = sorted(
                (r["value"], r["mean"], r["std"] or 0.0, r["n"])
                for r in rows
                if (r["series"], r["k"], r["language"]) == (series, k, language)
            )
            if not points:
                continue
            x, mean, std, n = map(np.array, zip(*points, strict=True))
            label = f"{series}, k={k}"
            _series(
                figure, panel, index, len(lines_of), x, mean, std, n, label, colours(index % 10)
            )
        _references(panel, panel_refs.get(language, {}))
        if log:
            panel.set_xscale("symlog", linthresh=min(positive))
        _x_range(panel, values, min(positive) if log else None)
        panel.set_xticks(values)
        panel.set_xticklabels([f"{v:g}" for v in values])
        panel.set_title("average over languages" if language == AVERAGE else language)
        panel.set_xlabel(key)
        panel.grid(alpha=0.3)
    title = f"{task}: {metric} vs {key} (mean ± std over seeds)"
    _finish(figure, axes, len(languages), metric, title, rows, refs, languages)
    safe = "".join(c if c.isalnum() else "_" for c in key)
    path = out / f"{task}_score_vs_{safe}.png"
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


CURVES = (
    ("task_loss", "task loss"),
    ("align_loss", "alignment loss"),
    ("held_out_distance", "held-out parallel distance (1 - cosine)"),
)


def plot_training_curves(
    curves: dict[tuple[str, int], list[list[dict[str, Any]]]], task: str, out: Path
) -> Path | None:
    """Task loss, alignment loss and held-out parallel distance over steps, per (method, k).

    Each line is the mean over that method's runs (seeds, and languages for k > 0) at the
    steps they logged; a panel appears only for what some run logged (the distance needs
    align.distance_every > 0).
    """
    panels = [
        (key, title)
        for key, title in CURVES
        if any(key in row for logs in curves.values() for log in logs for row in log)
    ]
    if not panels:
        return None
    figure, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), 3.6 + 0.3 * len(curves) / 3), squeeze=False
    )
    colours = plt.get_cmap("tab10")
    for panel, (key, title) in zip(axes[0], panels, strict=True):
        for index, ((method, k), logs) in enumerate(sorted(curves.items())):
            by_step: dict[int, list[float]] = {}
            for log in logs:
                for row in log:
                    if key in row and "step" in row:
                        by_step.setdefault(int(row["step"]), []).append(float(row[key]))
            if not by_step:
                continue
            steps = sorted(by_step)
            panel.plot(
                steps,
                [float(np.mean(by_step[s])) for s in steps],
                color=colours(index % 10),
                linestyle=STYLES[(index // 10) % len(STYLES)],
                marker=MARKERS[index % len(MARKERS)],
                markersize=3,
                label=f"{method}, k={k}",
            )
        panel.set_title(title)
        panel.set_xlabel("optimizer step")
        panel.grid(alpha=0.3)
    handles, labels = [], []
    for panel in axes[0]:
        for handle, label in zip(*panel.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    columns = min(len(labels), 3) or 1
    figure.legend(handles, labels, loc="lower center", ncol=columns, frameon=False)
    figure.suptitle(f"{task}: training curves (mean over runs)")
    lines = math.ceil(len(labels) / columns)
    figure.tight_layout(rect=(0, min(0.45, 0.06 + 0.06 * lines), 1, 0.93))
    path = out / f"{task}_training_curves.png"
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path

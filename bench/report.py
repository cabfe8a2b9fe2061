"""The table (Markdown, so it reads in a terminal and pastes into the README) and the JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.measure import Figure, Stats

__all__ = ["table", "to_json"]


def _number(value: float) -> str:
    """Three significant digits, with k/M for large values."""
    for bound, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= bound:
            return f"{value / bound:.3g}{suffix}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _stats(stats: Stats | None, unit: str) -> str:
    if stats is None:
        return "-"
    return f"{_number(stats.median)} {unit} [{_number(stats.min)}–{_number(stats.max)}]"


def _ratio(figure: Figure) -> str:
    if figure.ratio is None:
        return "-"
    text = f"{figure.ratio:.2f}"
    if figure.ratio_range is not None:
        low, high = figure.ratio_range
        text += f" [{low:.2f}–{high:.2f}]"
    return text


def table(figures: Sequence[Figure]) -> str:
    """A Markdown table of the figures, followed by what each baseline and ratio is."""
    header = ("figure", "value", "baseline", "ratio", "target", "result")
    rows = [header, tuple("---" for _ in header)]
    for figure in figures:
        rows.append(
            (
                f"`{figure.name}` {figure.title}",
                _stats(figure.value, figure.unit),
                _stats(figure.baseline, figure.unit),
                _ratio(figure),
                "-" if figure.target is None else str(figure.target),
                figure.status if figure.status not in ("PASS", "MISS") else f"**{figure.status}**",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.append("")
    lines.append(
        "Values and baselines: median [min–max] over the repeats. Ratio: from the medians "
        "[min–max of the per-repeat paired ratios]."
    )
    lines.append("")
    for figure in figures:
        if figure.unavailable is not None:
            lines.append(f"- `{figure.name}`: unavailable: {figure.unavailable}")
            continue
        text = f"- `{figure.name}`: baseline = {figure.baseline_label}; ratio = "
        text += figure.ratio_definition
        if figure.note:
            text += f"; {figure.note}"
        lines.append(text)
    return "\n".join(lines)


def to_json(figures: Sequence[Figure], meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "figures": [figure.to_json() for figure in figures]}

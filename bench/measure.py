"""Timing, statistics and the shape of one result row (a *figure*).

Every figure is measured in repeats; each repeat times the pds operation and its baseline
back to back (alternating which goes first), so a slow moment of the machine hits both.
A figure reports the median of the repeats with their min and max, and its ratio is taken
from the medians. Ratios, never absolute times, are what the targets judge.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = [
    "Figure",
    "Stats",
    "Target",
    "growth_figure",
    "interleaved",
    "rate_figure",
    "seconds_per_call",
    "seconds_per_item",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Stats:
    """The median, min and max of a figure's repeats (in the figure's unit)."""

    median: float
    min: float
    max: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Iterable[float]) -> Stats:
        values = tuple(float(v) for v in samples)
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values), values)

    def scaled(self, factor: float) -> Stats:
        return Stats.of(v * factor for v in self.samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "samples": list(self.samples),
        }


@dataclass(frozen=True, slots=True)
class Target:
    """A bound on a figure's ratio: ``ratio >= value`` or ``ratio <= value``."""

    op: Literal[">=", "<="]
    value: float

    def holds(self, ratio: float) -> bool:
        return ratio >= self.value if self.op == ">=" else ratio <= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


Status = Literal["PASS", "MISS", "n/a", "unavailable"]


@dataclass(slots=True)
class Figure:
    """One row of the table: a pds measurement beside its baseline, and their ratio.

    ``ratio_definition`` says how the ratio is formed: for throughput figures it is the
    pds rate over the baseline rate (higher is better); for the scaling figures it is the
    time (or peak RSS) at the largest size over the smallest (lower is better).
    """

    name: str
    title: str
    unit: str
    value: Stats | None
    baseline: Stats | None
    baseline_label: str
    ratio: float | None
    ratio_definition: str
    target: Target | None
    ratio_range: tuple[float, float] | None = None
    """The min and max of the per-repeat (paired) ratios."""
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    unavailable: str | None = None
    """Why the figure could not be measured (a peer library missing), else ``None``."""

    @property
    def status(self) -> Status:
        if self.unavailable is not None or self.ratio is None:
            return "unavailable"
        if self.target is None:
            return "n/a"
        return "PASS" if self.target.holds(self.ratio) else "MISS"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "value": None if self.value is None else self.value.to_json(),
            "baseline": None if self.baseline is None else self.baseline.to_json(),
            "baseline_label": self.baseline_label,
            "ratio": self.ratio,
            "ratio_range": None if self.ratio_range is None else list(self.ratio_range),
            "ratio_definition": self.ratio_definition,
            "target": None
            if self.target is None
            else {"op": self.target.op, "value": self.target.value},
            "status": self.status,
            "available": self.unavailable is None,
            "unavailable": self.unavailable,
            "note": self.note,
            "details": self.details,
        }

    @classmethod
    def unavailable_row(
        cls, name: str, title: str, reason: str, *, target: Target | None, note: str = ""
    ) -> Figure:
        return cls(
            name=name,
            title=title,
            unit="",
            value=None,
            baseline=None,
            baseline_label="",
            ratio=None,
            ratio_definition="",
            target=target,
            note=note,
            unavailable=reason,
        )


def rate_figure(
    *,
    name: str,
    title: str,
    pds_seconds: Sequence[float],
    baseline_seconds: Sequence[float],
    baseline_label: str,
    target: Target | None,
    unit: str = "ops/s",
    per: float = 1.0,
    note: str = "",
    details: dict[str, Any] | None = None,
) -> Figure:
    """A throughput figure from paired per-repeat times (seconds per operation).

    Values are rates (``per`` units per second); the ratio is pds rate / baseline rate.
    """
    pds_rates = [per / s for s in pds_seconds]
    base_rates = [per / s for s in baseline_seconds]
    value, baseline = Stats.of(pds_rates), Stats.of(base_rates)
    paired = [p / b for p, b in zip(pds_rates, base_rates, strict=True)]
    return Figure(
        name=name,
        title=title,
        unit=unit,
        value=value,
        baseline=baseline,
        baseline_label=baseline_label,
        ratio=value.median / baseline.median,
        ratio_definition="pds rate / baseline rate (higher is better)",
        target=target,
        ratio_range=(min(paired), max(paired)),
        note=note,
        details=details or {},
    )


def growth_figure(
    *,
    name: str,
    title: str,
    largest: Sequence[float],
    smallest: Sequence[float],
    sizes: tuple[int, int],
    target: Target,
    unit: str = "us",
    scale: float = 1e6,
    what: str = "time",
    size_label: Callable[[int], str] | None = None,
    note: str = "",
    details: dict[str, Any] | None = None,
) -> Figure:
    """A scaling figure: the cost at the largest size over the cost at the smallest."""
    label = size_label or _size
    value = Stats.of(largest).scaled(scale)
    baseline = Stats.of(smallest).scaled(scale)
    paired = [a / b for a, b in zip(largest, smallest, strict=True)]
    small, large = sizes
    return Figure(
        name=name,
        title=title,
        unit=unit,
        value=value,
        baseline=baseline,
        baseline_label=f"the same at {label(small)}",
        ratio=value.median / baseline.median,
        ratio_definition=f"{what} at {label(large)} / {what} at {label(small)} (lower is better)",
        target=target,
        ratio_range=(min(paired), max(paired)),
        note=note,
        details=details or {},
    )


def _size(n: int) -> str:
    if n >= 1000 and n % 1000 == 0:
        exponent = len(str(n)) - 1
        if n == 10**exponent:
            return f"1e{exponent}"
    return f"{n:,}"


def seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean seconds per call of ``fn`` over ``calls`` calls (after a collection)."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def seconds_per_item(fn: Callable[[T], object], items: Sequence[T]) -> float:
    """Mean seconds per call of ``fn(item)`` over prepared items."""
    gc.collect()
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def interleaved(repeats: int, *measures: Callable[[], float]) -> list[list[float]]:
    """Run each measure once per repeat, rotating which goes first; return the samples of
    each measure in the order given."""
    samples: list[list[float]] = [[] for _ in measures]
    for repeat in range(repeats):
        order = list(range(len(measures)))
        shift = repeat % len(measures)
        order = order[shift:] + order[:shift]
        for index in order:
            samples[index].append(measures[index]())
    return samples

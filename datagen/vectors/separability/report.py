"""What a separability measurement found, and where it is kept: the report, its inseparable
pairs, and ``LIBRARY/separability.json``.

Kept apart from the measurement so the result can be read, printed and stored without a
model or a feature extractor.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...fsutil import atomic_write_text

DEFAULT_THRESHOLD = 0.2
"""A pair is inseparable when confusion[a, b] + confusion[b, a] reaches this."""
RESULT_FILE = "separability.json"
"""Where ``datagen vectors separability LIB`` stores its results, inside the library folder."""


@dataclass
class InseparablePair:
    """Classes ``a`` and ``b`` (in report order) that cannot be told apart.

    ``a_as_b``: fraction of ``a``'s renders classified as ``b``; ``b_as_a`` the reverse.
    ``shared``: vector ids painted by both; ``-1`` stands for identical tensors under different ids.
    """

    a: str
    b: str
    a_as_b: float
    b_as_a: float
    shared: list[int] = field(default_factory=list)

    @property
    def confusion(self) -> float:
        return self.a_as_b + self.b_as_a

    def describe(self) -> str:
        """``31% of 'dense' renders look like 'stroma'`` (+ shared vectors), the worse direction first."""
        parts = []
        if self.shared:
            ids = [i for i in self.shared if i >= 0]
            what = []
            if ids:
                what.append(f"vector{'s' if len(ids) > 1 else ''} " + ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else ""))
            if -1 in self.shared:
                what.append("identical vectors")
            parts.append("they share " + " and ".join(what))
        if self.b_as_a >= self.a_as_b:
            worse, other, rate = self.b, self.a, self.b_as_a
        else:
            worse, other, rate = self.a, self.b, self.a_as_b
        if rate > 0 or not parts:
            parts.append(f"{rate:.0%} of {worse!r} renders look like {other!r}")
        return "; ".join(parts)


@dataclass
class SeparabilityReport:
    """Result of :func:`measure_separability`. Matrices are indexed like ``classes``."""

    classes: list[str]
    confusion: list[list[float]]
    """Row-normalised: confusion[i][j] = fraction of class i's renders classified as class j."""
    counts: list[list[int]]
    """The same as render counts."""
    accuracy: dict[str, float]
    centroid_similarity: list[list[float]]
    """Cosine similarity of the class centroids (z-scored descriptors, all renders)."""
    pairs: list[InseparablePair]
    vectors: dict[str, list[int]]
    """Vector ids measured per class (after the ``max_vectors`` cap; row positions without ids)."""
    num_vectors: dict[str, int]
    """Vectors per class before the cap."""
    threshold: float = DEFAULT_THRESHOLD
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No inseparable pair."""
        return not self.pairs

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / max(len(self.accuracy), 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for p, pd in zip(self.pairs, d["pairs"]):
            pd["confusion"] = round(p.confusion, 6)
        d["mean_accuracy"] = round(self.mean_accuracy, 6)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SeparabilityReport":
        keys = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in d.items() if k in keys}
        data["pairs"] = [InseparablePair(**{k: v for k, v in p.items() if k in ("a", "b", "a_as_b", "b_as_a", "shared")})
                         for p in d.get("pairs", [])]
        return cls(**data)

    def format(self, *, title: str | None = None) -> str:
        """A short text table: confusion in % (rows true, columns predicted), accuracy, pairs."""
        names = self.classes
        heads = _short_names(names)
        width = max(4, min(10, max((len(n) for n in heads), default=4)))
        row_w = max(6, max((len(n) for n in names), default=6))
        lines = [title or "class separability: nearest class centroid, leave one vector out "
                 "(rows: true class, columns: predicted, % of renders)"]
        lines.append(" " * row_w + " " + " ".join(f"{n[:width]:>{width}}" for n in heads) + "   acc")
        for i, n in enumerate(names):
            cells = " ".join(f"{100 * v:>{width}.0f}" for v in self.confusion[i])
            lines.append(f"{n:<{row_w}} {cells}  {100 * self.accuracy[n]:>3.0f}%")
        if self.settings.get("method") == "painted":
            what = f"{sum(len(v) for v in self.vectors.values())} vectors painted in {self.settings.get('num')} mosaics"
        else:
            what = f"{sum(len(v) for v in self.vectors.values())} vectors x {len(self.settings.get('seeds', [])) or '?'} seeds"
        lines.append(f"mean accuracy {100 * self.mean_accuracy:.0f}%; {what} in {self.seconds:.1f} s")
        if self.pairs:
            lines.append(f"inseparable (confusion a->b + b->a >= {self.threshold:g}, or shared vectors):")
            for p in sorted(self.pairs, key=lambda p: -p.confusion):
                lines.append(f"  {p.a!r} ~ {p.b!r}: {p.describe()} (sum {100 * p.confusion:.0f}%)")
        else:
            lines.append(f"every pair separable (confusion a->b + b->a < {self.threshold:g})")
        return "\n".join(lines)


def _short_names(names: Sequence[str]) -> list[str]:
    """Column headers: names without a prefix common to all (``cluster 0`` -> ``0``)."""
    prefix = os.path.commonprefix(list(names)) if len(names) > 1 else ""
    prefix = prefix[: prefix.rfind(" ") + 1] if " " in prefix else ""
    return [n[len(prefix):] or n for n in names]


def confusion_from_predictions(true: Sequence[int], pred: Sequence[int], n: int) -> tuple[list[list[int]], list[list[float]]]:
    """Counts (n, n) and the row-normalised confusion matrix (an empty row stays 0)."""
    counts = [[0] * n for _ in range(n)]
    for t, p in zip(true, pred):
        counts[t][p] += 1
    conf = [[c / max(sum(row), 1) for c in row] for row in counts]
    return counts, conf


def inseparable_pairs(classes: Sequence[str], confusion: Sequence[Sequence[float]], *, threshold: float = DEFAULT_THRESHOLD,
                      shared: Mapping[tuple[int, int], list[int]] | None = None) -> list[InseparablePair]:
    """Pairs (i < j) with confusion[i][j] + confusion[j][i] >= threshold or shared vectors."""
    out = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            s = (shared or {}).get((i, j), [])
            if confusion[i][j] + confusion[j][i] >= threshold or s:
                out.append(InseparablePair(classes[i], classes[j], round(float(confusion[i][j]), 6),
                                           round(float(confusion[j][i]), 6), list(s)))
    return out


def save_result(library_dir: str | os.PathLike, section: str, report: SeparabilityReport) -> Path:
    """Store ``report`` as ``section`` of ``LIBRARY/separability.json`` (other sections kept), atomically."""
    import json

    path = Path(library_dir) / RESULT_FILE
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
    if not isinstance(data, dict) or data.get("format") != "datagen-separability":
        data = {"format": "datagen-separability", "version": 1, "sections": {}}
    data.setdefault("sections", {})[section] = report.to_dict()
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


def load_result(library_dir: str | os.PathLike, section: str = "labels") -> SeparabilityReport | None:
    """``section`` of ``LIBRARY/separability.json``, or None when absent or unreadable."""
    import json

    path = Path(library_dir) / RESULT_FILE
    try:
        data = json.loads(path.read_text())
        return SeparabilityReport.from_dict(data["sections"][section])
    except (OSError, ValueError, KeyError, TypeError):
        return None

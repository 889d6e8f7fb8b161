"""The common base of all layout kinds, per-sample value ranges, and shared rendering helpers.

A layout is a recipe for *random* label maps: every call to
:meth:`LayoutSpec.generate` draws a new map from the ``np.random.Generator`` it
is given, so the same generator state always gives the same map. Layout files
refer to classes by name; the caller (the recipe) owns the numeric ids and
passes a ``{name: id}`` mapping, which keeps layouts reusable across recipes.
A class field left out (``classes:``, or an islands layout's ``background:``
and ``islands:``) means "the caller's classes": :meth:`LayoutSpec.with_classes`
fills it from the recipe's ``{name: weight}``, and :meth:`LayoutSpec.generate`
from the ``{name: id}`` mapping with equal weights, so the shipped presets fit
any recipe.

Sizes are fractions of the output's short side unless the layout gives
``reference_px``: then they are fractions of that many pixels and counts
(cells, islands) are per ``reference_px`` square, so regions keep their size in
pixels on any output (:meth:`LayoutSpec.at_size` turns one into the other).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr

from ..config import excerpt
from ..errors import ConfigError
from .postprocess import postprocess

#: A value that is either fixed or drawn per sample, uniformly from ``[lo, hi]``.
FloatRange = float | tuple[float, float]
#: Integer version of :data:`FloatRange`; ``[lo, hi]`` includes both ends.
IntRange = int | tuple[int, int]


def range_of(*, lo: float | None = None, hi: float | None = None, integer: bool = False,
             lo_open: bool = False) -> BeforeValidator:
    """Validator for a scalar-or-``[lo, hi]`` field with bounds, so YAML mistakes read well.

    Written as one BeforeValidator (not a pydantic union) so a bad value gives
    one message that states the expectation instead of one error per union arm.
    """
    what = "an integer" if integer else "a number"
    bounds = []
    if lo is not None:
        bounds.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        bounds.append(f"<= {hi:g}")
    expect = f"{what}{' ' + ' and '.join(bounds) if bounds else ''} or a [lo, hi] list of two such values"

    def one(v: Any) -> float | int:
        ok_type = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        if not ok_type or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
            raise ValueError(f"expected {expect}, got {excerpt(v)}")
        if integer:
            if float(v) != int(v):
                raise ValueError(f"expected {expect}, got {excerpt(v)}")
            v = int(v)
        else:
            v = float(v)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ValueError(f"expected {expect}, got {excerpt(v)}")
        if hi is not None and v > hi:
            raise ValueError(f"expected {expect}, got {excerpt(v)}")
        return v

    def validate(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise ValueError(f"expected {expect}, got a list of {len(v)}")
            a, b = one(v[0]), one(v[1])
            if a > b:
                raise ValueError(f"a range [lo, hi] needs lo <= hi, got [{a}, {b}]")
            return (a, b)
        return one(v)

    return BeforeValidator(validate)


def scale_range(value: FloatRange, k: float) -> FloatRange:
    """A fixed value or ``[lo, hi]`` range multiplied by ``k``."""
    return (value[0] * k, value[1] * k) if isinstance(value, tuple) else value * k


def scale_count(value: IntRange, k: float, minimum: int = 0) -> IntRange:
    """An integer or ``[lo, hi]`` range multiplied by ``k``, rounded, kept >= ``minimum``."""
    def one(v: int) -> int:
        return max(minimum, int(round(v * k)))
    return (one(value[0]), one(value[1])) if isinstance(value, tuple) else one(value)


def draw(rng: np.random.Generator, value: FloatRange) -> float:
    """A fixed value as is, or a uniform draw from ``[lo, hi]`` (no draw when fixed)."""
    if isinstance(value, tuple):
        lo, hi = value
        return float(lo) if lo == hi else float(rng.uniform(lo, hi))
    return float(value)


def draw_int(rng: np.random.Generator, value: IntRange) -> int:
    """A fixed integer as is, or a uniform draw from ``lo..hi`` inclusive."""
    if isinstance(value, tuple):
        lo, hi = value
        return int(lo) if lo == hi else int(rng.integers(lo, hi + 1))
    return int(value)


def _check_weights(w: dict[str, float]) -> dict[str, float]:
    if not any(v > 0 for v in w.values()):
        raise ValueError("expected at least one class with a weight > 0")
    return w


#: A class referenced by name (the recipe maps names to ids).
ClassName = Annotated[str, Field(min_length=1)]
#: ``{class name: weight}``; weights are relative (they need not sum to 1).
Weights = Annotated[dict[ClassName, Annotated[float, Field(ge=0, allow_inf_nan=False)]],
                    Field(min_length=1), AfterValidator(_check_weights)]


def weight_probs(weights: Mapping[str, float]) -> np.ndarray:
    """Weights normalised to probabilities, in mapping order."""
    w = np.asarray(list(weights.values()), dtype=np.float64)
    return w / w.sum()


class LayoutSpec(BaseModel):
    """One layout kind's parameters; :meth:`generate` turns them into a random label map.

    Subclasses set ``kind`` (a Literal, the YAML discriminator), implement
    :meth:`class_refs` and :meth:`_draw`. Post-processing (``smooth``,
    ``min_region``) lives here so every kind gets it the same way.
    """

    model_config = ConfigDict(extra="forbid")

    #: Fields that are lengths as fractions of the short side (scaled by :meth:`at_size`).
    LENGTH_FIELDS: ClassVar[tuple[str, ...]] = ()
    #: Fields that are counts per map, with their smallest value (scaled by area in :meth:`at_size`).
    COUNT_FIELDS: ClassVar[dict[str, int]] = {}

    kind: str
    #: Pixels that the size fractions refer to (and whose square the counts are per); None: the output's short side.
    reference_px: Annotated[float, Field(gt=0, le=1 << 20, allow_inf_nan=False)] | None = None
    #: Boundary smoothing: Gaussian sigma in px (scalar or per-sample range); 0 = off.
    smooth: Annotated[FloatRange, range_of(lo=0.0, hi=256.0)] = 0.0
    #: Smallest allowed 4-connected region in px; smaller ones merge into their main neighbour.
    min_region: Annotated[int, Field(ge=0, strict=True)] = 0

    _file: str | None = PrivateAttr(default=None)
    _field: str = PrivateAttr(default="layout")
    _base_dir: Path | None = PrivateAttr(default=None)

    def bind_source(self, file: str | None, field: str, base_dir: Path | None = None) -> None:
        """Remember where this spec came from, so errors raised while generating can name it."""
        self._file = file
        self._field = field
        self._base_dir = base_dir

    @property
    def base_dir(self) -> Path | None:
        """Folder that relative paths in this layout resolve against (None: the working directory)."""
        return self._base_dir

    # -- class references -------------------------------------------------
    def class_refs(self) -> list[tuple[str, str]]:
        """``(field path relative to the layout, class name)`` for every class name used."""
        raise NotImplementedError

    def omitted_classes(self) -> list[str]:
        """The class fields left out, to be filled from the caller's classes (:meth:`with_classes`)."""
        return ["classes"] if "classes" in type(self).model_fields and getattr(self, "classes") is None else []

    def _class_defaults(self, weights: dict[str, float]) -> dict[str, Any]:
        """Values for the omitted class fields, from the caller's ``{name: weight}`` (in its order)."""
        return {"classes": dict(weights)} if self.omitted_classes() else {}

    def with_classes(self, weights: Mapping[str, float]) -> "LayoutSpec":
        """This layout with every omitted class field filled from ``weights`` (``{class: weight}``, in the
        recipe's order; see docs/layouts.md#presets); itself when nothing is omitted."""
        if not self.omitted_classes():
            return self
        weights = {str(n): float(w) for n, w in weights.items()}
        if not weights:
            raise ConfigError("the layout leaves its classes out, but no classes were given to fill them",
                              file=self._file, field=self._field)
        update = self._class_defaults(weights)
        for name, value in update.items():
            if isinstance(value, dict) and not any(w > 0 for w in value.values()):
                raise ConfigError(f"`{name}` is left out, so it takes the recipe's classes ({', '.join(value)}), "
                                  "but their weights are all 0; give a class a weight > 0 or list the layout's classes",
                                  file=self._file, field=f"{self._field}.{name}")
        return self.model_copy(update=update)

    # -- sizes in pixels ------------------------------------------------------
    def at_size(self, size: tuple[int, int]) -> "LayoutSpec":
        """The same layout with ``reference_px`` applied for an output of ``size`` (height, width):
        lengths rescaled to fractions of its short side, counts to its area. Itself without ``reference_px``."""
        if self.reference_px is None:
            return self
        h, w = int(size[0]), int(size[1])
        k_len = self.reference_px / min(h, w)
        k_area = h * w / self.reference_px**2
        update: dict[str, Any] = {"reference_px": None}
        update.update({f: scale_range(getattr(self, f), k_len) for f in self.LENGTH_FIELDS})
        update.update({f: scale_count(getattr(self, f), k_area, lo) for f, lo in self.COUNT_FIELDS.items()})
        return self.model_copy(update=update)

    def class_names(self) -> set[str]:
        """Every class name this layout paints, so a recipe can check them against its classes."""
        return {name for _, name in self.class_refs()}

    def check_classes(self, class_ids: Mapping[str, int]) -> None:
        """Raise :class:`ConfigError` for a class name the recipe does not define or a bad id."""
        for where, name in self.class_refs():
            if name not in class_ids:
                known = ", ".join(sorted(class_ids)) or "(none)"
                raise ConfigError(f"unknown class '{name}'; expected one of the recipe's classes: {known}",
                                  file=self._file, field=f"{self._field}.{where}")
        for name, cid in class_ids.items():
            if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)) or not 0 <= int(cid) <= 255:
                raise ConfigError(f"class '{name}' has id {cid!r}; expected an integer 0-255 (label maps are uint8)",
                                  file=self._file, field=self._field)

    # -- generation ---------------------------------------------------------
    def generate(self, rng: np.random.Generator, size: tuple[int, int],
                 class_ids: Mapping[str, int]) -> np.ndarray:
        """Draw one ``(H, W)`` uint8 map of class ids; ``size`` is ``(height, width)``."""
        h, w = int(size[0]), int(size[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
        spec = self.with_classes({name: 1.0 for name in class_ids}) if self.omitted_classes() else self
        spec.check_classes(class_ids)
        labels = spec.at_size((h, w))._draw(rng, (h, w), class_ids)
        assert labels.shape == (h, w) and labels.dtype == np.uint8
        return postprocess(labels, smooth=draw(rng, self.smooth), min_region=self.min_region)

    def _draw(self, rng: np.random.Generator, size: tuple[int, int],
              class_ids: Mapping[str, int]) -> np.ndarray:
        raise NotImplementedError


def id_lut(names: list[str], class_ids: Mapping[str, int]) -> np.ndarray:
    """Class index (position in ``names``) -> class id, as a uint8 lookup table."""
    return np.array([int(class_ids[n]) for n in names], dtype=np.uint8)

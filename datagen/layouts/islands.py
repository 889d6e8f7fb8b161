"""``kind: islands`` — islands of some classes on a background class, optionally nested."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from .base import (ClassName, FloatRange, IntRange, LayoutSpec, Weights, draw, draw_int, range_of,
                   weight_probs)

# Angular resolution of an island's outline (radius as a function of angle).
_ANGLES = 1024
# Outline harmonics: 2..8 bumps around the circle (1 would only shift the centre).
_HARMONICS = np.arange(2, 9, dtype=np.float64)
# Deepest nesting followed (a -> b -> c ...); guards against cycles like a -> b -> a.
_MAX_DEPTH = 4
_SQUARE = np.ones((3, 3), dtype=bool)
_THETA = _HARMONICS[:, None] * np.linspace(-math.pi, math.pi, _ANGLES, endpoint=False)[None, :]
_COS, _SIN = np.cos(_THETA), np.sin(_THETA)
#: ``nest`` key standing for every island class that has no entry of its own.
WILDCARD = "*"


class NestSpec(BaseModel):
    """An island of class ``inner`` drawn inside an island of the parent class (e.g. a necrotic core)."""

    model_config = ConfigDict(extra="forbid")

    #: Class of the inner island; left out: the layout's ``background`` (a hole, e.g. a gland's lumen).
    inner: ClassName | None = None
    #: Chance that a parent island gets an inner island.
    probability: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    #: Inner radius as a fraction of the parent's radius.
    size: Annotated[FloatRange, range_of(lo=0.0, hi=1.0, lo_open=True)] = (0.3, 0.6)
    #: Width in px of the parent class kept all around the inner island.
    rim: Annotated[int, Field(ge=0, le=64, strict=True)] = 2


def _outline(rng: np.random.Generator, radius: float, roughness: float) -> np.ndarray:
    """Radius for each of ``_ANGLES`` directions: a circle bent by a few random harmonics.

    The wobble multiplies the radius through ``exp`` so the outline never
    pinches through the centre, however rough.
    """
    a = rng.standard_normal((2, len(_HARMONICS))) / _HARMONICS
    a /= math.sqrt(float((1.0 / _HARMONICS**2).sum()))  # unit variance over angles
    wobble = a[0] @ _COS + a[1] @ _SIN
    return (radius * np.exp(roughness * wobble)).astype(np.float32)


def _blob(cy: float, cx: float, r_of_angle: np.ndarray, size: tuple[int, int]
          ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The island's pixels as (crop box, boolean mask in that box); None when off-image."""
    h, w = size
    rmax = float(r_of_angle.max())
    y0, y1 = max(0, int(math.floor(cy - rmax))), min(h, int(math.ceil(cy + rmax)) + 1)
    x0, x1 = max(0, int(math.floor(cx - rmax))), min(w, int(math.ceil(cx + rmax)) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
    ang = np.arctan2(dy, dx)
    k = ((ang + np.float32(math.pi)) * np.float32(_ANGLES / (2 * math.pi))).astype(np.int32) % _ANGLES
    mask = dy * dy + dx * dx < r_of_angle[k] ** 2
    return (slice(y0, y1), slice(x0, x1)), mask


class IslandsLayout(LayoutSpec):
    """Round, irregular islands of the ``islands`` classes on a ``background`` class.

    Islands are placed uniformly (they may overlap, later ones on top, and be
    cut by the image border); each gets a class drawn by weight. With ``nest``,
    an island of a listed parent class may get an inner island (e.g. a
    necrotic core in a tumour) that always lies inside the parent's visible
    part, with at least ``rim`` px of parent around it; nesting can chain
    (inner islands of a class that is itself a ``nest`` key get their own).
    The ``nest`` key ``"*"`` stands for every island class without its own entry.
    """

    kind: Literal["islands"] = "islands"
    LENGTH_FIELDS = ("radius",)
    COUNT_FIELDS = {"count": 0}

    #: Class of everything that is not an island; left out: the recipe's first class not in ``islands``.
    background: ClassName | None = None
    #: ``{class: weight}``: the chance of an island getting each class; left out: every recipe class
    #: but the background, by their ``weight``.
    islands: Weights | None = None
    #: Number of (top-level) islands per map.
    count: Annotated[IntRange, range_of(lo=0, hi=10000, integer=True)] = (3, 10)
    #: Island radius as a fraction of the image's short side (per island when a range).
    radius: Annotated[FloatRange, range_of(lo=0.0, hi=2.0, lo_open=True)] = (0.04, 0.12)
    #: How irregular outlines are (std of log radius over angles): 0 = circles, 0.2 = lumpy, 0.4+ = lobed.
    roughness: Annotated[FloatRange, range_of(lo=0.0, hi=2.0)] = 0.2
    #: ``{parent class: {inner, probability, size, rim}}``: islands inside islands (``"*"``: every island class).
    nest: dict[ClassName, NestSpec] = Field(default_factory=dict)

    def class_refs(self) -> list[tuple[str, str]]:
        refs = [("background", self.background)] if self.background is not None else []
        refs += [(f"islands.{n}", n) for n in self.islands or {}]
        for parent, spec in self.nest.items():
            if parent != WILDCARD:
                refs.append((f"nest.{parent}", parent))
            if spec.inner is not None:
                refs.append((f"nest.{parent}.inner", spec.inner))
        return refs

    def omitted_classes(self) -> list[str]:
        return [f for f in ("background", "islands") if getattr(self, f) is None]

    def _class_defaults(self, weights: dict[str, float]) -> dict[str, Any]:
        update: dict[str, Any] = {}
        background = self.background
        if background is None:
            listed = set(self.islands or ())
            background = update["background"] = next((n for n in weights if n not in listed), next(iter(weights)))
        if self.islands is None:
            update["islands"] = {n: w for n, w in weights.items() if n != background} or {background: 1.0}
        return update

    def nests(self) -> dict[str, NestSpec]:
        """``nest`` with ``"*"`` expanded over the island classes and every ``inner`` given."""
        out = {p: s for p, s in self.nest.items() if p != WILDCARD}
        if WILDCARD in self.nest:
            for name in self.islands or {}:
                out.setdefault(name, self.nest[WILDCARD])
        return {p: s if s.inner is not None else s.model_copy(update={"inner": self.background})
                for p, s in out.items()}

    def _draw(self, rng: np.random.Generator, size: tuple[int, int],
              class_ids: Mapping[str, int]) -> np.ndarray:
        assert self.background is not None and self.islands is not None  # generate() fills them
        h, w = size
        short = min(h, w)
        labels = np.full(size, class_ids[self.background], dtype=np.uint8)
        names = list(self.islands)
        probs = weight_probs(self.islands)
        nest = self.nests()
        owner = np.zeros(size, dtype=np.int32) if nest else None
        # (owner id, class name, centre, radius px, crop box) of islands that may get inner islands
        parents: list[tuple[int, str, tuple[float, float], float, tuple[slice, slice]]] = []
        n = draw_int(rng, self.count)
        for i in range(1, n + 1):
            cy, cx = rng.random() * h, rng.random() * w
            radius = draw(rng, self.radius) * short
            name = names[int(rng.choice(len(names), p=probs))]
            blob = _blob(cy, cx, _outline(rng, radius, draw(rng, self.roughness)), size)
            if blob is None:
                continue
            box, mask = blob
            labels[box][mask] = class_ids[name]
            if owner is not None:
                owner[box][mask] = i
                if name in nest:
                    parents.append((i, name, (cy, cx), radius, box))
        if owner is None:
            return labels
        next_id = n + 1
        for _ in range(_MAX_DEPTH):
            children = []
            for pid, pname, pcentre, pradius, pbox in parents:
                spec = nest[pname]
                if rng.random() >= spec.probability:
                    continue
                inside = owner[pbox] == pid
                if spec.rim:
                    inside = ndimage.binary_erosion(inside, _SQUARE, iterations=spec.rim)
                where = np.flatnonzero(inside)
                if len(where) == 0:
                    continue
                frac = draw(rng, spec.size)
                radius = frac * pradius
                # Centre: near the parent's centre (a core), or anywhere inside if that spot is taken.
                rr = 0.5 * (1.0 - frac) * pradius * math.sqrt(rng.random())
                phi = 2.0 * math.pi * rng.random()
                cy, cx = pcentre[0] + rr * math.sin(phi), pcentre[1] + rr * math.cos(phi)
                py, px = int(cy) - pbox[0].start, int(cx) - pbox[1].start
                if not (0 <= py < inside.shape[0] and 0 <= px < inside.shape[1] and inside[py, px]):
                    py, px = np.divmod(where[int(rng.integers(len(where)))], inside.shape[1])
                    cy, cx = pbox[0].start + py + 0.5, pbox[1].start + px + 0.5
                blob = _blob(cy, cx, _outline(rng, radius, draw(rng, self.roughness)), size)
                if blob is None:
                    continue
                box, mask = blob
                # Clip to the (eroded) parent: both boxes are in image coordinates.
                oy0, oy1 = max(box[0].start, pbox[0].start), min(box[0].stop, pbox[0].stop)
                ox0, ox1 = max(box[1].start, pbox[1].start), min(box[1].stop, pbox[1].stop)
                m = (mask[oy0 - box[0].start:oy1 - box[0].start, ox0 - box[1].start:ox1 - box[1].start]
                     & inside[oy0 - pbox[0].start:oy1 - pbox[0].start, ox0 - pbox[1].start:ox1 - pbox[1].start])
                obox = (slice(oy0, oy1), slice(ox0, ox1))
                assert spec.inner is not None
                labels[obox][m] = class_ids[spec.inner]
                owner[obox][m] = next_id
                if spec.inner in nest:
                    children.append((next_id, spec.inner, (cy, cx), radius, obox))
                next_id += 1
            if not children:
                break
            parents = children
        return labels

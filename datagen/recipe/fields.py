"""The parts of a recipe: classes, vector references, unit edits and paint options.

Each field coerces the YAML spellings users write (``size: 256``, ``color: [214, 39, 40]``,
``vectors: [12, {id: 7, weight: 2}]``) and raises a ValueError that names what was expected;
:mod:`datagen.recipe.schema` turns it into a ConfigError with the file and field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ..config import excerpt

_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


# -- field types ------------------------------------------------------------------
def coerce_color(v: Any) -> str:
    if v is None:
        raise ValueError('expected a colour like "#d62728" (quote it: in YAML an unquoted # starts a comment)')
    if isinstance(v, (list, tuple)):
        if len(v) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in v):
            raise ValueError(f"expected a colour as \"#rrggbb\" or [r, g, b] with 0..255 integers, got {excerpt(v)}")
        return "#" + "".join(f"{c:02x}" for c in v)
    if not isinstance(v, str) or not _HEX.match(v.strip()):
        raise ValueError(f'expected a colour as "#rrggbb" (or "#rgb", or [r, g, b]), got {excerpt(v)}')
    h = v.strip().lstrip("#").lower()
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return "#" + h


def coerce_vector_ref(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a vector id (integer) or {{id: N, weight: W}}, got {excerpt(v)}")
    if isinstance(v, int):
        return {"id": v}
    if isinstance(v, dict):
        return v
    raise ValueError(f"expected a vector id (integer) or {{id: N, weight: W}}, got {excerpt(v)}")


def coerce_size(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return tuple(v)
    raise ValueError(f"expected [height, width] or one integer, got {excerpt(v)}")


def coerce_name(v: Any) -> Any:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v.strip() or "\n" in v:
        raise ValueError(f"expected a non-empty single-line name, got {excerpt(v)}")
    return v.strip()


def coerce_layout(v: Any) -> Any:
    if v is None or isinstance(v, dict):
        return v
    if isinstance(v, str) and v.strip():
        return v.strip()
    raise ValueError(f"expected a mapping like {{kind: voronoi, ...}} or a preset name / path, got {excerpt(v)}")


def coerce_fixed_style(v: Any) -> Any:
    if isinstance(v, bool) or (isinstance(v, int) and v >= 0):
        return v
    raise ValueError(f"expected true, false or a style seed (an integer >= 0), got {excerpt(v)}")


def coerce_augment_item(v: Any) -> Any:
    if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"].strip():
        raise ValueError(f"expected a transform like {{name: HorizontalFlip, p: 0.5}}, got {excerpt(v)}")
    return v


StrictId = Annotated[int, Field(strict=True, ge=0)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class VectorRef(BaseModel):
    """A library vector and its sampling weight within its class."""

    model_config = ConfigDict(extra="forbid")
    id: StrictId
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0


class UnitInsert(BaseModel):
    """``insert: {units: [7, 9], value: 3.0}``: set these units to a value (one number, or one per unit)."""

    model_config = ConfigDict(extra="forbid")
    units: Annotated[list[StrictId], Field(min_length=1, description="unit (channel) indices like [7, 9]")]
    value: Annotated[Annotated[float, Field(allow_inf_nan=False)] | list[Annotated[float, Field(allow_inf_nan=False)]],
                     Field(description="a number, or one per unit, e.g. value: 3.0")]

    @model_validator(mode="after")
    def _check(self) -> "UnitInsert":
        if isinstance(self.value, list) and len(self.value) != len(self.units):
            raise ValueError(f"expected one value per unit ({len(self.units)}), got {len(self.value)}; "
                             "or one number for all")
        return self


class UnitsSpec(BaseModel):
    """GAN Dissection edits of a class's painted cells, after painting (datagen.vectors.units).

    Explicit: ``{layer: dec.x8, ablate: [12, 40], insert: {units: [7], value: 3.0}}``. Ranked:
    ``{top: 8, mode: ablate}`` (the class's top-IoU units of ``layer``, found once by rendering
    ``rank_renders`` layouts; insert sets each to its top-1 % activation unless ``value`` is given).
    """

    model_config = ConfigDict(extra="forbid")
    layer: Annotated[str, Field(min_length=1)] | None = None
    """The layer edited: the paint layer (default) or a later one."""
    ablate: Annotated[list[StrictId], Field(min_length=1)] | None = None
    insert: UnitInsert | None = None
    top: Annotated[int, Field(strict=True, ge=1)] | None = None
    mode: Literal["ablate", "insert"] | None = None
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    rank_renders: Annotated[int, Field(strict=True, ge=1, le=256)] = 8

    @model_validator(mode="after")
    def _check(self) -> "UnitsSpec":
        if self.top is None:
            if self.ablate is None and self.insert is None:
                raise ValueError("expected ablate: [units], insert: {units: [...], value: V} or top: K (with mode:)")
            for key in ("mode", "value"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: goes with top: K (ranked units); explicit units say ablate: or insert:")
            if "rank_renders" in self.model_fields_set:
                raise ValueError("rank_renders: goes with top: K (ranked units)")
        else:
            if self.ablate is not None or self.insert is not None:
                raise ValueError("top: K picks the units itself; give either top: (with mode:) or ablate:/insert:")
            if self.value is not None and self.mode != "insert":
                raise ValueError("value: goes with mode: insert")
        return self

    @property
    def ranked_mode(self) -> str:
        return self.mode or "ablate"


class ClassSpec(BaseModel):
    """One segmentation class: its label id and colour, and what is painted where it lies."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, BeforeValidator(coerce_name), Field(description="a class name such as tumor")]
    id: Annotated[int, Field(strict=True, ge=0, le=255, description="an integer 0..255 (the mask value)")]
    color: Annotated[str, BeforeValidator(coerce_color), Field(description='a display colour like "#d62728"')]
    keep: Annotated[bool, Field(strict=True)] = False
    vectors: list[Annotated[VectorRef, BeforeValidator(coerce_vector_ref)]] | None = None
    clusters: list[StrictId] | None = None
    label: Annotated[str, BeforeValidator(coerce_name)] | None = None
    weight: Weight = 1.0
    paint: Literal["full", "grid"] = "full"
    """``grid``: the class's vectors go into g x g blocks of layer cells (the paper's grid), the gaps
    keep the generator's own activations (written as ignore) or take the ``between`` class."""
    grid: Annotated[int, Field(strict=True, ge=1, le=16)] | None = None
    between: Annotated[str, BeforeValidator(coerce_name)] | None = None
    units: UnitsSpec | None = None

    @property
    def grid_size(self) -> int:
        """g of ``paint: grid`` (default 2), 0 for whole regions."""
        return (self.grid or 2) if self.paint == "grid" else 0

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)

    @property
    def has_sources(self) -> bool:
        return bool(self.vectors) or bool(self.clusters) or self.label is not None


class PaintOptions(BaseModel):
    """How the layer-sized label map is made and applied (see datagen.paint)."""

    model_config = ConfigDict(extra="forbid")
    soft_boundary: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    resize: Literal["nearest"] = "nearest"
    mask: Literal["layout", "cells", "rendered"] = "rendered"
    """What the written mask is: the boundaries the generator drew (``rendered``), the layout
    itself, or the painted layer cells (see datagen.render and datagen.masks)."""
    min_confidence: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    """``mask: rendered`` only: a boundary pixel whose classifier confidence is lower is written as ignore."""
    boundary_ignore: Annotated[int, Field(strict=True, ge=0, le=64)] = 0
    """Pixels within this many px of a boundary (on each side) are written as ignore: the
    strip where the image blends both sides. 0: none."""


__all__ = ["ClassSpec", "PaintOptions", "UnitInsert", "UnitsSpec", "VectorRef"]

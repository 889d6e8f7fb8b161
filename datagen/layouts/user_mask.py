"""``kind: mask`` — label maps drawn by a person (PNG files), as in the paper's fig. 8."""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image
from pydantic import BeforeValidator, PrivateAttr, ValidationInfo, field_validator, model_validator

from ..config import excerpt
from ..errors import ConfigError
from .base import ClassName, LayoutSpec

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_GLOB_CHARS = set("*?[")


def _hex(rgb: int) -> str:
    return f"#{rgb:06x}"


def _resolve(patterns: list[str], base_dir: Path) -> tuple[list[Path], str | None]:
    """Files named by paths and glob patterns (relative ones under ``base_dir``); or the first bad entry."""
    files: list[Path] = []
    for pat in patterns:
        p = Path(pat).expanduser()
        full = p if p.is_absolute() else base_dir / p
        if _GLOB_CHARS & set(pat):
            hits = sorted(Path(f) for f in glob.glob(str(full), recursive=True) if Path(f).is_file())
            if not hits:
                return files, f"no file matches '{pat}' (looked in {full.parent})"
            files += hits
        elif full.is_file():
            files.append(full)
        else:
            return files, f"mask file '{pat}' not found (looked for {full})"
    return files, None


def _path_shape(v: Any) -> Any:
    """One clear message for a wrong ``path`` instead of one per union arm."""
    if isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(p, str) for p in v)):
        return v
    raise ValueError(f"expected a PNG path, a glob pattern, or a non-empty list of them, got {excerpt(v)}")


def _base_dir(info: ValidationInfo | None) -> Path:
    """Folder for relative mask paths: ``context["base_dir"]`` from parse_layout, else the working dir."""
    base = (info.context or {}).get("base_dir") if info is not None else None
    return Path(base) if base is not None else Path.cwd()


class MaskLayout(LayoutSpec):
    """A fixed, hand-drawn layout (or one per sample from several files).

    Each PNG is either an id image (grayscale or paletted: pixel value = class
    id, which must be one of the recipe's ids) or, when ``colors`` is given, a
    colour image whose colours map to class names. Masks are resized to the
    output size with nearest neighbour; ``flip``/``rotate`` add random
    mirrored and turned copies. Relative paths resolve against the recipe's
    folder (``base_dir`` passed to :func:`~datagen.layouts.parse_layout`).
    """

    kind: Literal["mask"] = "mask"
    #: A PNG file, a glob pattern, or a list of those; one file is chosen per sample.
    path: Annotated[str | list[str], BeforeValidator(_path_shape)]
    #: ``{class name: "#rrggbb"}`` for colour masks; leave out for id masks.
    colors: dict[ClassName, str] | None = None
    #: Randomly mirror the mask left-right and top-bottom (each with chance 1/2).
    flip: bool = False
    #: Randomly turn the mask by a multiple of 90 degrees (only 0/180 for non-square outputs).
    rotate: bool = False

    _files: list[Path] = PrivateAttr(default_factory=list)
    _cache: dict[Any, np.ndarray] = PrivateAttr(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: str | list[str], info: ValidationInfo) -> str | list[str]:
        for p in [v] if isinstance(v, str) else v:
            if not p.strip():
                raise ValueError("expected a PNG path or glob pattern, got an empty string")
        _, problem = _resolve([v] if isinstance(v, str) else list(v), _base_dir(info))
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("colors")
    @classmethod
    def _check_colors(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("expected at least one {class: '#rrggbb'} entry (or leave `colors` out for id masks)")
        seen: dict[str, str] = {}
        for name, col in v.items():
            if not isinstance(col, str) or not _HEX.match(col):
                raise ValueError(f"colour of '{name}' must be a '#rrggbb' string, got {col!r}")
            key = col.lower()
            if key in seen:
                raise ValueError(f"'{name}' and '{seen[key]}' both use colour {key}; expected one class per colour")
            seen[key] = name
        return v

    @field_validator("reference_px")
    @classmethod
    def _no_reference(cls, v: float | None) -> float | None:
        if v is not None:
            raise ValueError("a mask is stretched to the output size; reference_px applies to procedural kinds only")
        return v

    @model_validator(mode="after")
    def _find_files(self, info: ValidationInfo) -> MaskLayout:
        files, _ = _resolve([self.path] if isinstance(self.path, str) else list(self.path), _base_dir(info))
        self._files = files
        return self

    @property
    def files(self) -> list[Path]:
        """The mask files found when the spec was parsed (sorted within each glob)."""
        return list(self._files)

    def class_refs(self) -> list[tuple[str, str]]:
        return [(f"colors.{n}", n) for n in (self.colors or {})]

    # -- loading -----------------------------------------------------------------
    def check_files(self, class_ids: Mapping[str, int]) -> None:
        """Open every mask file now and check its ids/colours (ConfigError naming the file), so a bad
        file is reported before any output exists rather than at the block that first draws it."""
        for file in self._files:
            self._load_ids(file, class_ids)

    def _load_ids(self, file: Path, class_ids: Mapping[str, int]) -> np.ndarray:
        """The mask as a uint8 id image at its own size (cached: files are read once)."""
        key = (file, tuple(sorted(class_ids.items())))
        if key in self._cache:
            return self._cache[key]
        try:
            with Image.open(file) as im:
                im.load()
                mode = im.mode
                arr = np.asarray(im.convert("RGB") if self.colors is not None or mode not in ("L", "P", "I", "I;16", "1")
                                 else im)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read mask image: {e}", file=file, field=f"{self._field}.path") from None
        if arr.ndim == 3 and self.colors is None:
            if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
                arr = arr[..., 0]  # a grayscale image saved as RGB
            else:
                raise ConfigError(f"mask is a colour ({mode}) image; expected a grayscale/paletted id image, "
                                  "or add `colors: {class: '#rrggbb'}` to map its colours",
                                  file=file, field=f"{self._field}.colors")
        ids = self._colors_to_ids(arr, file, class_ids) if arr.ndim == 3 else self._check_ids(arr, file, class_ids)
        self._cache[key] = ids
        return ids

    def _colors_to_ids(self, rgb: np.ndarray, file: Path, class_ids: Mapping[str, int]) -> np.ndarray:
        assert self.colors is not None
        packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
        values, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
        by_color = {int(c[1:], 16): class_ids[name] for name, c in self.colors.items()}
        unknown = [(int(v), int(n)) for v, n in zip(values, counts) if int(v) not in by_color]
        if unknown:
            unknown.sort(key=lambda vn: -vn[1])
            listed = ", ".join(f"{_hex(v)} ({n} px)" for v, n in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            expected = ", ".join(f"{c.lower()} ({name})" for name, c in self.colors.items())
            raise ConfigError(f"mask has colours not in `colors`: {listed}{more}; expected only {expected}"
                              f" (layout from {self._file or 'code'})", file=file, field=f"{self._field}.colors")
        table = np.array([by_color[int(v)] for v in values], dtype=np.uint8)
        return table[inverse].reshape(packed.shape)

    def _check_ids(self, arr: np.ndarray, file: Path, class_ids: Mapping[str, int]) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        counts = np.bincount(arr.ravel().astype(np.int64))
        valid = {int(v) for v in class_ids.values()}
        bad = [(int(v), int(counts[v])) for v in np.flatnonzero(counts) if int(v) not in valid]
        if bad:
            listed = ", ".join(f"{v} ({n} px)" for v, n in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            expected = ", ".join(f"{cid} ({name})" for name, cid in sorted(class_ids.items(), key=lambda kv: kv[1]))
            raise ConfigError(f"mask has pixel values that are not class ids: {listed}{more}; expected only "
                              f"{expected} (layout from {self._file or 'code'})", file=file, field=f"{self._field}.path")
        return arr.astype(np.uint8)

    def _draw(self, rng: np.random.Generator, size: tuple[int, int],
              class_ids: Mapping[str, int]) -> np.ndarray:
        h, w = size
        files = self._files
        file = files[int(rng.integers(len(files)))] if len(files) > 1 else files[0]
        ids = self._load_ids(file, class_ids)
        key = (file, tuple(sorted(class_ids.items())), size)
        out = self._cache.get(key)
        if out is None:
            out = ids if ids.shape == (h, w) else np.asarray(
                Image.fromarray(ids).resize((w, h), resample=Image.Resampling.NEAREST))
            self._cache[key] = out
        if self.rotate:
            k = int(rng.integers(4)) if h == w else 2 * int(rng.integers(2))
            out = np.rot90(out, k)
        if self.flip:
            if rng.random() < 0.5:
                out = out[:, ::-1]
            if rng.random() < 0.5:
                out = out[::-1, :]
        return np.array(out, dtype=np.uint8, copy=True)  # never hand out the cached array

"""Reading a canvas back: which files make it, which mask values are classes, level 0 by windows.

``datagen canvas`` writes ``slide.ome.tif`` + ``slide.mask.ome.tif`` + ``slide.canvas.json``
(or ``slide.tif`` + ``slide.mask.tif`` + ``slide.canvas.json``) and/or an OME-Zarr
(:mod:`datagen.writers.slide`). Two commands read canvases back: ``datagen export geojson``
(the mask, strip by strip) and ``datagen qc`` (image and mask, window by window). They must
agree on which files belong together, where the class table is, which mask values are
ignored and how level 0 is opened without reading the whole slide; so that lives here, once.

Nothing heavy is imported at module level (tifffile, zarr and yaml on use), so the CLI can
tell a canvas from a dataset (:func:`is_canvas_path`) while it builds its parser.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatagenError
from .writers.slide import mask_paths

MASK_SUFFIXES = (".mask.ome.tiff", ".mask.ome.tif", ".mask.tiff", ".mask.tif")
TIFF_SUFFIXES = (".tiff", ".tif")
SIDECAR_SUFFIX = ".canvas.json"
#: ``tool`` in a canvas's metadata (sidecar and zarr attributes ``datagen``).
CANVAS_TOOL = "datagen canvas"
WHAT = "slide.ome.tif, slide.mask.ome.tif, slide.canvas.json or a canvas OME-Zarr folder"


class CanvasFileError(DatagenError):
    """A canvas that cannot be read: says which file and what was expected."""


def canvas_stem(mask: Path) -> str:
    """``slide`` of ``slide.mask.ome.tif``."""
    for suffix in MASK_SUFFIXES:
        if mask.name.lower().endswith(suffix):
            return mask.name[: -len(suffix)]
    return mask.stem


def _read_json(p: Path) -> dict[str, Any]:
    doc = json.loads(p.read_text())
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    return doc


def canvas_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(mask TIFF, sidecar JSON) of a canvas given its image TIFF, its mask TIFF or its sidecar."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(SIDECAR_SUFFIX):
        try:
            mask = p.with_name(str(_read_json(p)["mask"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CanvasFileError(f"{p}: cannot read the canvas sidecar ({type(exc).__name__}: {exc}); "
                                  "expected the JSON that `datagen canvas` writes, with a 'mask' entry") from None
        return mask, p
    if name.endswith(MASK_SUFFIXES):
        return p, p.with_name(f"{canvas_stem(p)}{SIDECAR_SUFFIX}")
    return mask_paths(p)


def canvas_zarr_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``datagen`` attributes of an OME-Zarr folder that ``datagen canvas --zarr`` wrote, else None
    (read from ``zarr.json`` directly: cheap, no zarr import)."""
    p = Path(path)
    try:
        attrs = _read_json(p / "zarr.json").get("attributes") or {}
    except (OSError, ValueError, TypeError):
        return None
    meta = attrs.get("datagen") if isinstance(attrs, dict) else None
    return meta if isinstance(meta, dict) and meta.get("tool") == CANVAS_TOOL else None


def is_canvas_path(path: str | os.PathLike) -> bool:
    """A canvas rather than a dataset folder: a ``.tif``/``.tiff`` file, a ``.canvas.json`` or a
    folder whose zarr attributes say ``datagen canvas`` wrote it (existence is not checked for files)."""
    p = Path(path)
    if p.is_dir():
        return canvas_zarr_meta(p) is not None
    return p.name.lower().endswith((*TIFF_SUFFIXES, SIDECAR_SUFFIX))


def canvas_recipe(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe stored in a canvas's metadata, parsed ({} when absent or unreadable)."""
    text = meta.get("recipe")
    if not isinstance(text, str):
        return {}
    try:
        import yaml

        doc = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - the metadata's own class table is what counts
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class CanvasClasses:
    """A canvas's class table and how its mask values are read.

    ``keep_ids``: classes of the table that are ``keep: true`` in the stored recipe (the
    generator's own tissue, which no class claims); ``ignore_index``: the mask value of pixels
    that claim no class (keep regions, unsure or boundary pixels of ``mask: rendered``)."""

    classes: list[dict[str, Any]]
    keep_ids: frozenset[int]
    ignore_index: int | None


def canvas_classes(meta: Mapping[str, Any]) -> CanvasClasses:
    """Class table, keep classes and ignore value of a canvas's metadata (sidecar or zarr attributes).

    Raises KeyError/TypeError/ValueError on a malformed table (callers name the file)."""
    from .masks import DEFAULT_IGNORE

    classes = meta["classes"]
    if not isinstance(classes, list):
        raise TypeError("'classes' is not a list")
    classes = [dict(c) for c in classes]
    for c in classes:
        int(c["id"])
    recipe = canvas_recipe(meta)
    keep_names = {c.get("name") for c in recipe.get("classes", []) or [] if isinstance(c, dict) and c.get("keep")}
    keep = frozenset(int(c["id"]) for c in classes if c.get("keep") or c.get("name") in keep_names)
    # the metadata records ignore_index only when keep regions were written with it; a recipe's
    # ignore value (default 255) may still mark unpainted slivers
    ignore = meta["ignore_index"] if "ignore_index" in meta else recipe.get("ignore_index", DEFAULT_IGNORE)
    return CanvasClasses(classes, keep, None if ignore is None else int(ignore))


def _table_error(source: Path, exc: Exception) -> CanvasFileError:
    return CanvasFileError(f"{source}: cannot read the class table ({type(exc).__name__}: {exc}); expected the "
                           "JSON that `datagen canvas` writes, with 'classes': [{id, name, color}, ...]")


def _classes_of(meta: Mapping[str, Any], source: Path) -> CanvasClasses:
    try:
        return canvas_classes(meta)
    except (KeyError, TypeError, ValueError) as exc:
        raise _table_error(source, exc) from None


def _open_tiff_level0(path: Path, stack: ExitStack) -> Any:
    """Level 0 of a (pyramidal) TIFF as a lazy zarr array; its store closes with ``stack``."""
    import tifffile
    import zarr

    try:
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds; name the file
        raise CanvasFileError(f"{path}: cannot read as a TIFF ({type(exc).__name__}: {exc})") from None
    stack.callback(store.close)
    return zarr.open(store, mode="r")


class CanvasReader:
    """Level 0 of a canvas, opened lazily and read by windows (memory: the windows read).

    ``path``: the image TIFF, the mask TIFF, the ``.canvas.json`` sidecar, or the OME-Zarr
    folder. ``mask`` (a lazy zarr array, (h, w)) opens at once; ``image`` ((h, w, 3) for TIFFs,
    (3, h, w) for the zarr; read it with :meth:`image_window`) on first use, so a mask and its
    sidecar suffice for mask-only readers. Use as a context manager (closes the TIFF stores).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._stack = ExitStack()
        self._image: Any = None
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise

    def _open(self) -> None:
        p = self.path
        if p.is_dir():
            meta = canvas_zarr_meta(p)
            if meta is None:
                raise CanvasFileError(f"{p}: not a canvas OME-Zarr (expected a zarr.json whose attributes hold "
                                      f"'datagen': {{'tool': '{CANVAS_TOOL}', ...}}, as `datagen canvas --zarr` "
                                      "writes)")
            self.kind, self.meta, self.image_path, self.mask_path, self.sidecar = "zarr", meta, p, p, None
            self.stem = p.name.removesuffix(".zarr").removesuffix(".ome")
            self.classes = _classes_of(meta, p / "zarr.json")
            import zarr

            self._root = zarr.open_group(str(p), mode="r")
            try:
                self.mask = self._root["labels/mask/0"]
            except KeyError:
                raise CanvasFileError(f"{p}: no label image labels/mask/0 (expected the OME-Zarr that "
                                      "`datagen canvas --zarr` writes)") from None
        else:
            self.kind = "tiff"
            mask, sidecar = canvas_files(p)
            if not mask.is_file():
                raise CanvasFileError(f"{mask}: canvas mask not found (expected <stem>.mask.ome.tif beside the image, "
                                      "as `datagen canvas --out` writes it)")
            try:
                meta = _read_json(sidecar)
            except FileNotFoundError:
                raise CanvasFileError(f"{sidecar}: canvas sidecar not found (it holds the class table of "
                                      f"{mask.name})") from None
            except (OSError, ValueError, TypeError) as exc:
                raise _table_error(sidecar, exc) from None
            self.meta, self.mask_path, self.sidecar, self.stem = meta, mask, sidecar, canvas_stem(mask)
            self.classes = _classes_of(meta, sidecar)
            name = p.name.lower()
            if name.endswith((*MASK_SUFFIXES, SIDECAR_SUFFIX)):  # the sidecar names the image
                self.image_path = p.with_name(str(meta["image"])) if isinstance(meta.get("image"), str) else None
            else:
                self.image_path = p
            self.mask = _open_tiff_level0(mask, self._stack)
        if self.mask.ndim != 2:
            raise CanvasFileError(f"{self.mask_path}: expected a 2-D label mask, got shape {self.mask.shape}")
        self.size: tuple[int, int] = (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @property
    def image(self) -> Any:
        """Level 0 of the image as a lazy zarr array (opened on first use)."""
        if self._image is None:
            if self.kind == "zarr":
                try:
                    img = self._root["0"]
                except KeyError:
                    raise CanvasFileError(f"{self.path}: no image array 0 (expected the OME-Zarr that "
                                          "`datagen canvas --zarr` writes)") from None
                shape, want = tuple(img.shape), (3, *self.size)
            else:
                if self.image_path is None or not self.image_path.is_file():
                    raise CanvasFileError(f"{self.image_path or self.sidecar}: canvas image not found (expected the "
                                          f"image TIFF that the sidecar {self.sidecar} names as 'image', beside "
                                          f"{self.mask_path.name})")
                img = _open_tiff_level0(self.image_path, self._stack)
                shape, want = tuple(img.shape), (*self.size, 3)
            if shape != want or img.dtype != np.uint8:
                raise CanvasFileError(f"{self.image_path}: expected a uint8 RGB image of {self.size[0]}x"
                                      f"{self.size[1]} px like its mask (shape {want}), got {shape} {img.dtype}")
            self._image = img
        return self._image

    def mask_window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1-y0, x1-x0) mask values of a level-0 window."""
        return np.asarray(self.mask[y0:y1, x0:x1])

    def image_window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1-y0, x1-x0, 3) uint8 RGB of a level-0 window."""
        if self.kind == "zarr":
            return np.ascontiguousarray(np.asarray(self.image[:, y0:y1, x0:x1]).transpose(1, 2, 0))
        return np.asarray(self.image[y0:y1, x0:x1])

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> CanvasReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CANVAS_TOOL", "CanvasClasses", "CanvasFileError", "CanvasReader", "canvas_classes", "canvas_files",
           "canvas_recipe", "canvas_stem", "canvas_zarr_meta", "is_canvas_path"]

"""The studio's state: one recipe (or vector library), its model, its paint setups and libraries.

Everything the web app does goes through one :class:`Studio`. Model calls (live renders,
exports, thumbnails) are serialized by one lock, because painting hooks the generator's
layer; edits of a library's ``library.yaml`` hold a second lock around the whole
read-modify-write, so concurrent label requests never lose an update or corrupt the file.
Nothing here imports the web framework: the state is usable (and tested) on its own.

The painted label map
---------------------
The page paints an (H, W) map of class ids at the recipe's size. The *eraser* paints the
id of a ``keep`` class: the generator's own activations, written into masks as the recipe's
ignore value. A recipe without a keep class gets one, named ``unpainted``, with a free id
and colour; it is part of the exported recipe too, so the exported map is a ``kind: mask``
layout (datagen/layouts/user_mask.py) that the exported recipe accepts as it is.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatagenError
from .export import painted_recipe_yaml
from .wire import MAX_UPLOAD, USER_ERRORS, PathEscapeError, decode_label_map, encode_png, one_line, resolve_within  # noqa: F401 (re-exported)

#: Display colours of the classes a library-only session makes from labels or clusters.
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94")
ERASER_NAME = "unpainted"
#: Paint setups (library x soft boundary) kept ready; each may hold a fitted mask classifier.
MAX_SETUPS = 6
THUMB_MODES = ("full", "grid")
#: Most thumbnails rendered in one model call (a page asks for a screenful at once).
THUMB_BATCH = 16


@dataclass
class Painter:
    """One paint setup of the session: the recipe as painted (library, soft boundary, eraser class) and its renderer."""

    recipe: Any  # datagen.recipe.Recipe
    renderer: Any  # datagen.render.Renderer
    library: str | None


@dataclass
class Paint:
    """What one request paints: the label map, the sample index and the setup's choices."""

    labels: np.ndarray
    index: int
    soft_boundary: float
    library: str | None


class Studio:
    """A recipe (or a vector library) loaded for painting, browsing and labelling.

    ``source``: a recipe YAML or a vector library folder (then one class per label, or per
    cluster when nothing is labelled). ``out_dir``: where :meth:`save` writes. A source that
    cannot be loaded does not raise: :attr:`error` holds the one-line message the CLI would
    print, and :meth:`reload` tries again (after the file was fixed)."""

    def __init__(self, source: str | Path, *, out_dir: str | Path = "studio-out", seed: int = 0,
                 device: str | None = None, trust_pickles: bool = False, thumb_size: int | None = None) -> None:
        self.source = Path(source)
        self.out_dir = Path(out_dir)
        self.seed = int(seed)
        self.device = device
        self.trust_pickles = trust_pickles
        self.thumb_size = thumb_size
        self.lock = threading.RLock()  #: serializes every use of the model (painting hooks its layer)
        self.error: str | None = None
        self.generator: Any = None
        self._model_spec: str | None = None
        self.recipe: Any = None
        self.mode = "library" if self.source.is_dir() else "recipe"
        self.library_root: Path | None = None
        self.default_library: str | None = None
        self._library_names: list[str] = []
        self._libraries: dict[str, Any] = {}
        self._painters: OrderedDict[tuple[str | None, float], Painter] = OrderedDict()
        self._thumbs: dict[tuple[str, int, str], bytes] = {}
        self._thumbs_wanted: dict[tuple[str, str], list[int]] = {}  #: asked for while the model was busy
        self._thumb_lock = threading.Lock()
        self.eraser_id: int | None = None
        self._eraser_class: Any = None
        self._class_ids: dict[str, int] = {}  #: a library on its own: class name -> id, kept for the session
        self.reload()

    # ---- loading ----------------------------------------------------------------
    def reload(self) -> None:
        """(Re)read the source, its library and model; on failure keep the message in :attr:`error`."""
        with self.lock:
            self._painters.clear()
            self._thumbs.clear()
            self._libraries.clear()
            try:
                self._load()
                self.error = None
            except USER_ERRORS as e:
                self.error = one_line(e)
                self.recipe = None

    def _load(self) -> None:
        from ..generate import load_recipe_model
        from ..recipe import load_recipe
        from ..vectors.library import VectorLibrary

        self.mode = "library" if self.source.is_dir() else "recipe"
        if self.mode == "library":
            lib = VectorLibrary.load(self.source)
            lib_dir = self.source.resolve()
            recipe = self._library_recipe(lib, lib_dir)
        else:
            recipe = load_recipe(self.source)
            lib_dir = recipe.library_path.resolve() if recipe.library_path is not None else None
        if self.generator is None or self._model_spec != recipe.model_spec:
            self.generator = load_recipe_model(recipe, self.device, trust_pickles=self.trust_pickles)
            self._model_spec = recipe.model_spec
        if self.mode == "library":  # the recipe made for a library needs the model for its size
            recipe = self._library_recipe(lib, lib_dir)
        self.recipe = recipe
        self._set_eraser(recipe)
        self.library_root = lib_dir.parent if lib_dir is not None else None
        self.default_library = lib_dir.name if lib_dir is not None else None
        self._library_names = self._discover_libraries(lib_dir) if lib_dir is not None else []
        self._painter(self.default_library, float(recipe.paint.soft_boundary))  # every check, now

    def _library_recipe(self, lib: Any, lib_dir: Path) -> Any:
        """A recipe for a library on its own: one class per label (else per cluster, else one class)."""
        from ..recipe import Recipe

        if lib.labels:
            sources = [(name, {"label": name}) for name in lib.labels]
        elif lib.clusters:
            sources = [(f"cluster {k}", {"clusters": [k]}) for k in lib.clusters]
        else:
            sources = [("vectors", {"vectors": lib.ids[:64]})]
        sources = sources[:len(PALETTE)]
        ids = self._class_ids  # a name keeps its id for the session, so a painted map keeps its meaning
        for name, _ in sources:
            if name not in ids:
                ids[name] = min(set(range(1, 255)) - set(ids.values()))  # 0: the eraser's
        gen = self.generator
        size = list(gen.native_size) if gen is not None else [256, 256]  # the model's own size (its training crop)
        data = {
            "model": lib.model, "layer": lib.layer, "library": str(lib_dir), "size": size,
            "classes": [{"name": n, "id": ids[n], "color": PALETTE[ids[n] % len(PALETTE)], **src} for n, src in sources],
            "layout": {"kind": "voronoi", "classes": {n: 1 for n, _ in sources}},
        }
        from pydantic import ValidationError

        try:
            recipe = Recipe.model_validate(data)
        except (ValidationError, ConfigError) as e:
            raise ConfigError(f"cannot make a recipe for this library: {one_line(e)}", file=lib_dir) from None
        recipe._base_dir = lib_dir.parent
        recipe.parsed_layout()
        return recipe

    def _set_eraser(self, recipe: Any) -> None:
        """The class the eraser paints: the recipe's first keep class, else an added ``unpainted`` one."""
        from ..recipe import ClassSpec

        keep = [c for c in recipe.classes if c.keep]
        if keep:
            self.eraser_id, self._eraser_class = keep[0].id, None
            return
        ids = {c.id for c in recipe.classes} | ({recipe.ignore_index} if recipe.ignore_index is not None else set())
        free = next((i for i in range(256) if i not in ids), None)
        if free is None:
            raise ConfigError("every mask value 0..255 is a class id or the ignore value; the eraser needs a free one",
                              file=recipe.file, field="classes")
        names = {c.name for c in recipe.classes}
        name = next(n for n in (ERASER_NAME, *(f"{ERASER_NAME}-{k}" for k in range(2, 300))) if n not in names)
        colors = {c.color for c in recipe.classes}
        color = next(f"#{v:02x}{v:02x}{v:02x}" for v in range(256) if f"#{v:02x}{v:02x}{v:02x}" not in colors)
        self._eraser_class = ClassSpec(name=name, id=free, color=color, keep=True)
        self.eraser_id = free

    def _discover_libraries(self, lib_dir: Path) -> list[str]:
        """The recipe's library and its sibling folders holding libraries of the same model (the paint-layer choices)."""
        from ..vectors.library import SIDECAR_FILE, VectorLibrary

        main = VectorLibrary.load(lib_dir)
        self._libraries[lib_dir.name] = main
        names = [lib_dir.name]
        try:
            siblings = sorted(p for p in lib_dir.parent.iterdir() if p != lib_dir and (p / SIDECAR_FILE).is_file())
        except OSError:
            siblings = []
        for p in siblings[:64]:
            try:
                lib = VectorLibrary.load(p)
            except USER_ERRORS:
                continue  # not ours to report: the recipe does not use it
            if lib.model == main.model:
                self._libraries[p.name] = lib
                names.append(p.name)
        return names

    def _check_ready(self) -> None:
        if self.recipe is None:
            raise DatagenError(self.error or "nothing loaded")

    # ---- libraries -----------------------------------------------------------------
    def library_dir(self, name: str | None) -> Path:
        """The folder of library ``name`` (relative to the library root; default: the recipe's library)."""
        self._check_ready()
        if self.library_root is None:
            raise DatagenError("this recipe paints no vectors: it names no library")
        name = name or self.default_library
        path = resolve_within(self.library_root, name, "library")
        if path.name not in self._library_names or path.parent != self.library_root.resolve():
            known = ", ".join(self._library_names)
            raise DatagenError(f"library {name!r} is not one of this session's libraries ({known})")
        return path

    def library(self, name: str | None) -> Any:
        from ..vectors.library import VectorLibrary

        path = self.library_dir(name)
        lib = self._libraries.get(path.name)
        if lib is None:
            lib = self._libraries[path.name] = VectorLibrary.load(path)
        return lib

    # ---- painting -------------------------------------------------------------------
    def _painter(self, library: str | None, soft_boundary: float) -> Painter:
        """The paint setup for a library and soft boundary (cached; built and checked on first use)."""
        from ..assemble import assemble
        from ..render import Renderer

        self._check_ready()
        if not 0.0 <= soft_boundary <= 1.0:
            raise DatagenError(f"soft boundary must be in [0, 1], got {soft_boundary}")
        name = (self.library_dir(library).name if self.library_root is not None else None)
        key = (name, round(float(soft_boundary), 3))
        painter = self._painters.get(key)
        if painter is not None:
            self._painters.move_to_end(key)
            return painter
        base = self.recipe
        update: dict[str, Any] = {"paint": base.paint.model_copy(update={"soft_boundary": key[1]})}
        if name is not None:
            lib = self.library(name)
            update["library"] = str(self.library_dir(name))
            update["layer"] = lib.layer
        if self._eraser_class is not None:
            update["classes"] = [*base.classes, self._eraser_class]
        recipe = base.model_copy(update=update)
        renderer = Renderer.from_setup(assemble(recipe, self.generator, self.seed))
        painter = self._painters[key] = Painter(recipe, renderer, name)
        while len(self._painters) > MAX_SETUPS:
            self._painters.popitem(last=False)
        return painter

    def paint_request(self, data: bytes, *, index: int, soft_boundary: float | None = None,
                      library: str | None = None) -> Paint:
        """Check a page's request: its label map against the recipe, its index and choices."""
        self._check_ready()
        if not isinstance(index, int) or index < 0:
            raise DatagenError(f"sample index must be a whole number >= 0, got {index!r}")
        soft = float(self.recipe.paint.soft_boundary if soft_boundary is None else soft_boundary)
        allowed = {c.id for c in self.recipe.classes} | {self.eraser_id}
        labels = decode_label_map(data, tuple(self.recipe.size), allowed)
        return Paint(labels, int(index), soft, library)

    def render(self, paint: Paint) -> tuple[np.ndarray, dict[str, Any]]:
        """The image (H, W, 3) uint8 of a painted label map: one forward pass, no mask (the live view)."""
        with self.lock:
            t0 = time.perf_counter()
            p = self._painter(paint.library, paint.soft_boundary)
            r = p.renderer
            plan = r.plan(paint.index, paint.labels)
            image = r.render([paint.index], paint.labels[None], [plan])[0]
            ms = (time.perf_counter() - t0) * 1000
        return image, {"render_ms": round(ms, 1), "index": paint.index, "library": p.library}

    def render_pair(self, paint: Paint) -> tuple[np.ndarray, np.ndarray, Painter]:
        """(image, mask, setup) of a painted label map, the mask as the recipe's mask mode writes it
        (``mask: rendered`` fits its classifier on the first call, seconds on a CPU)."""
        with self.lock:
            p = self._painter(paint.library, paint.soft_boundary)
            r = p.renderer
            plan = r.plan(paint.index, paint.labels)
            images, masks = r.render_pairs([paint.index], paint.labels[None], [plan])
        return images[0], masks[0], p

    def random_layout(self, index: int, library: str | None = None) -> np.ndarray:
        """The recipe layout's label map of sample ``index`` (a starting point to paint over)."""
        if not isinstance(index, int) or index < 0:
            raise DatagenError(f"sample index must be a whole number >= 0, got {index!r}")
        with self.lock:
            p = self._painter(library, float(self.recipe.paint.soft_boundary) if self.recipe else 0.0)
            return p.renderer.make_layout(index)

    # ---- exports -------------------------------------------------------------------------
    def recipe_yaml(self, painter: Painter, layout_file: str = "layout.png", *, index: int | None = None) -> str:
        """The recipe as painted, with the painted map as its layout (:func:`painted_recipe_yaml`)."""
        return painted_recipe_yaml(painter.recipe, painter.renderer.layer, source=str(self.source),
                                   eraser_id=self.eraser_id, layout_file=layout_file, index=index)

    def export(self, kind: str, paint: Paint) -> tuple[bytes, str, str]:
        """One export of a painted map: (content, media type, file name).

        ``layout.png`` the painted map (class ids; a ``kind: mask`` layout), ``recipe.yaml`` the
        recipe using it, ``image.png`` / ``mask.png`` the rendered pair, ``pair.zip`` all four."""
        stem = f"studio-{paint.index:06d}"
        if kind == "layout.png":
            return encode_png(paint.labels), "image/png", f"{stem}-layout.png"
        if kind == "recipe.yaml":
            with self.lock:
                p = self._painter(paint.library, paint.soft_boundary)
            return self.recipe_yaml(p, f"{stem}-layout.png", index=paint.index).encode(), "application/x-yaml", f"{stem}.yaml"
        if kind == "image.png":
            image, _ = self.render(paint)
            return encode_png(image), "image/png", f"{stem}-image.png"
        if kind in ("mask.png", "pair.zip"):
            image, mask, p = self.render_pair(paint)
            if kind == "mask.png":
                return encode_png(mask), "image/png", f"{stem}-mask.png"
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for name, content in self._bundle(paint, image, mask, p).items():
                    z.writestr(f"{stem}/{name}", content)
            return buf.getvalue(), "application/zip", f"{stem}.zip"
        raise DatagenError(f"unknown export {kind!r}; expected layout.png, recipe.yaml, image.png, mask.png or pair.zip")

    def _bundle(self, paint: Paint, image: np.ndarray, mask: np.ndarray, painter: Painter) -> dict[str, bytes]:
        return {"image.png": encode_png(image), "mask.png": encode_png(mask), "layout.png": encode_png(paint.labels),
                "recipe.yaml": self.recipe_yaml(painter, "layout.png", index=paint.index).encode()}

    def save(self, name: str, paint: Paint) -> list[Path]:
        """Write the pair, the painted map and its recipe into ``out_dir/name/`` (``name`` may not leave ``out_dir``)."""
        from ..fsutil import atomic_write_bytes

        self.out_dir.mkdir(parents=True, exist_ok=True)
        folder = resolve_within(self.out_dir, name, "save folder")
        image, mask, p = self.render_pair(paint)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for fname, content in self._bundle(paint, image, mask, p).items():
            atomic_write_bytes(folder / fname, content)
            written.append(folder / fname)
        return written

    # ---- vectors ----------------------------------------------------------------------------
    def vectors(self, library: str | None = None) -> dict[str, Any]:
        """The library's vectors with label, cluster, tileability and the recipe classes that paint them."""
        from ..recipe import resolve_class_vector_ids

        lib = self.library(library)
        name = self.library_dir(library).name
        used: dict[int, list[str]] = {}
        try:
            recipe = self.recipe.model_copy(update={"library": str(self.library_dir(name))})
            for cls, (ids, _) in resolve_class_vector_ids(recipe, lib).items():
                for i in ids:
                    used.setdefault(i, []).append(cls)
        except USER_ERRORS:
            pass  # the recipe's classes do not resolve in this library: no vector is "used"
        thr = (lib.tileability or {}).get("threshold")
        return {
            "library": name, "layer": lib.layer, "model": lib.model, "summary": lib.summary(),
            "threshold": thr, "labels": lib.labels, "clusters": lib.clusters,
            "classes": [c.name for c in self.recipe.classes if not c.keep],
            "vectors": [{"id": r.id, "label": r.label, "cluster": r.cluster, "tileability": r.tileability,
                         "tileable": (r.tileability >= thr) if (thr is not None and r.tileability is not None) else None,
                         "classes": used.get(r.id, [])} for r in lib.records],
        }

    def thumbnail(self, library: str | None, vector_id: int, mode: str) -> bytes:
        """PNG of what vector ``vector_id`` draws in full replace or grid replace (g = 2), cached in memory.

        Requests that arrive while the model is busy are rendered together in one batch (a page
        asks for a screenful of thumbnails at once)."""
        from ..vectors.extract import resolve_size
        from ..vectors.visualize import visualize

        if mode not in THUMB_MODES:
            raise DatagenError(f"thumbnail mode must be full or grid, got {mode!r}")
        name = self.library_dir(library).name
        vid = int(vector_id)
        self.library(name).record(vid)  # unknown ids: DatagenError naming the library's range
        key = (name, vid, mode)
        cached = self._thumbs.get(key)
        if cached is not None:
            return cached
        with self._thumb_lock:
            wanted = self._thumbs_wanted.setdefault((name, mode), [])
            if vid not in wanted:
                wanted.append(vid)
        with self.lock:
            cached = self._thumbs.get(key)
            if cached is not None:
                return cached
            with self._thumb_lock:
                wanted = self._thumbs_wanted.pop((name, mode), [])
            batch = [vid] + [i for i in wanted if i != vid and (name, i, mode) not in self._thumbs][:THUMB_BATCH - 1]
            lib = self.library(name)
            size = self.thumb_size or (lib.image_size[0] if lib.image_size else 128)
            hw = resolve_size(self.generator, (size, size))
            imgs = visualize(self.generator, lib.get(batch), lib.layer, mode=mode, grid=2, seeds=[0], size=hw,
                             batch_size=THUMB_BATCH, progress=False)
            for i, im in zip(batch, imgs):
                self._thumbs[(name, i, mode)] = encode_png(im[0].permute(1, 2, 0).numpy())
            return self._thumbs[key]

    def set_label(self, library: str | None, ids: list[int], label: str | None) -> dict[str, Any]:
        """Label vectors ``ids`` as ``label`` (None clears) in library.yaml, as ``datagen vectors
        label`` does (:func:`~datagen.vectors.library.label_vectors`, under the library's lock)."""
        from ..vectors.library import label_vectors

        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise DatagenError(f"ids: expected a non-empty list of vector ids, got {str(ids)[:80]}")
        path = self.library_dir(library)
        lib = label_vectors(path, ids, label)
        self._after_label_change(path.name)
        return {"library": path.name, "ids": ids, "label": lib.record(ids[0]).label, "labels": lib.labels}

    def rename_label(self, library: str | None, old: str, new: str | None) -> dict[str, Any]:
        """Rename label ``old`` to ``new`` on every vector that has it (None or "" clears it)."""
        from ..vectors.library import rename_label

        path = self.library_dir(library)
        lib, ids = rename_label(path, old, new)
        self._after_label_change(path.name)
        return {"library": path.name, "ids": ids, "label": new or None, "labels": lib.labels}

    def _after_label_change(self, name: str) -> None:
        """Classes that paint by label now resolve to other vectors: drop the setups and the cached
        library (reread from disk on next use) and, for a library on its own, remake its classes."""
        with self.lock:
            self._libraries.pop(name, None)
            self._painters.clear()
            if self.mode == "library" and name == self.default_library and self.recipe is not None:
                try:
                    self.recipe = self._library_recipe(self.library(name), self.library_dir(name))
                    self._set_eraser(self.recipe)
                except USER_ERRORS as e:
                    self.error, self.recipe = one_line(e), None

    # ---- the page's view of the session ----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = {"source": str(self.source), "mode": self.mode, "error": self.error,
                                   "out_dir": str(self.out_dir), "seed": self.seed}
            if self.recipe is None:
                return out
            r = self.recipe
            classes = [{"id": c.id, "name": c.name, "color": c.color, "keep": c.keep} for c in r.classes]
            if self._eraser_class is not None:
                c = self._eraser_class
                classes.append({"id": c.id, "name": c.name, "color": c.color, "keep": True, "eraser": True})
            libs = []
            for name in self._library_names:
                try:
                    lib = self.library(name)  # reread after a label change
                except USER_ERRORS:
                    continue  # edited on disk into something unreadable: not offered
                lh, lw = self.generator.layer_size(lib.layer, tuple(r.size))
                libs.append({"name": name, "layer": lib.layer, "layer_size": [lh, lw]})
            layer = r.layer or self.generator.default_layer
            lh, lw = self.generator.layer_size(layer, tuple(r.size))
            out.update({
                "model": r.model_spec, "size": [int(s) for s in r.size], "classes": classes,
                "eraser": self.eraser_id, "ignore_index": r.ignore_index, "soft_boundary": r.paint.soft_boundary,
                "mask_mode": r.paint.mask, "layer": layer, "layer_size": [lh, lw], "library": self.default_library,
                "libraries": libs,
            })
            return out


__all__ = ["Paint", "Painter", "PathEscapeError", "Studio", "decode_label_map", "encode_png", "one_line",
           "resolve_within"]

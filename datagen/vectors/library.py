"""A vector library: activation vectors of one generator layer plus what is known about each.

On disk a library is a directory::

    vectors.safetensors   {"vectors": (N, C) float32, "ids": (N,) int64}
    library.yaml          provenance + one record per vector (human-editable)

``library.yaml`` is meant to be read and edited by people: labelling vectors by
typing a class name into their ``label:`` field is a supported workflow (see
docs/vectors.md). Every record is one line::

    vectors:
    - {id: 0, image: 0, y: 3, x: 9, seed: 0, cluster: 4, tileability: 0.912, label: tumor}

Vector ids are stable: they are stored next to the tensor rows, so selecting a
subset, re-clustering or re-scoring never renumbers vectors a recipe refers to.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import load_yaml, parse_model
from ..errors import ConfigError, DatagenError, UsageError
from ..fsutil import atomic_path, atomic_write_text

VECTORS_FILE = "vectors.safetensors"
SIDECAR_FILE = "library.yaml"
FORMAT_NAME = "datagen-vector-library"
FORMAT_VERSION = 1


def _tool_version() -> str:
    from .. import __version__

    return __version__


def _check_label(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise ValueError(f"a label must be a string, got {name!r}")
    name = name.strip()
    if not name or "\n" in name:
        raise ValueError("a label must be a non-empty single-line string (or null for no label)")
    return name


@dataclass
class VectorRecord:
    """What is known about one vector. ``image``/``y``/``x``/``seed`` locate its origin:
    image ``image`` of the extraction (inputs drawn with ``sample_torch_generator(seed,
    image, "extract")``), layer pixel row ``y``, column ``x``."""

    id: int
    image: int | None = None
    y: int | None = None
    x: int | None = None
    seed: int | None = None
    cluster: int | None = None
    tileability: float | None = None
    label: str | None = None


# -- sidecar schema (validation of the human-editable YAML) -------------------
class _RecordModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=0)
    image: int | None = Field(None, ge=0)
    y: int | None = Field(None, ge=0)
    x: int | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0)
    cluster: int | None = Field(None, ge=0)
    tileability: float | None = None
    label: str | None = None

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)  # `label: 3` in YAML is a number; accept it as the name "3"
        return _check_label(v)


class _SidecarModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    model: str
    layer: str
    channels: int = Field(ge=1)
    image_size: tuple[int, int] | None = None
    extraction: dict[str, Any] = Field(default_factory=dict)
    tileability: dict[str, Any] | None = None
    clustering: dict[str, Any] | None = None
    tool_version: str | None = None
    created: str | None = None
    notes: str | None = None
    vectors: list[_RecordModel] = Field(default_factory=list)

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v != FORMAT_NAME:
            raise ValueError(f"expected {FORMAT_NAME!r}")
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v > FORMAT_VERSION:
            raise ValueError(f"library format version {v} is newer than this datagen understands ({FORMAT_VERSION})")
        return v


@dataclass
class VectorLibrary:
    """Activation vectors (N, C) of one layer of one generator, with per-vector records.

    Provenance: ``model`` (generator spec), ``layer``, ``image_size`` (H, W) used for
    extraction, ``extraction`` (seed, num_images, per_image, ...), ``tileability``
    (extractor, layer, grid, seeds, size used for the scores, or None),
    ``clustering`` (k, seed, metric, prototype ids, or None), ``tool_version``.
    """

    vectors: torch.Tensor
    records: list[VectorRecord]
    model: str
    layer: str
    image_size: tuple[int, int] | None = None
    extraction: dict[str, Any] = field(default_factory=dict)
    tileability: dict[str, Any] | None = None
    clustering: dict[str, Any] | None = None
    tool_version: str = field(default_factory=_tool_version)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    notes: str | None = None

    def __post_init__(self) -> None:
        v = self.vectors
        if not isinstance(v, torch.Tensor) or v.ndim != 2:
            raise ValueError(f"VectorLibrary: vectors must be a (N, C) tensor, got {getattr(v, 'shape', type(v))}")
        self.vectors = v.detach().to("cpu", torch.float32).contiguous()
        if len(self.records) != len(self.vectors):
            raise ValueError(f"VectorLibrary: {len(self.records)} records for {len(self.vectors)} vectors")
        self._reindex()

    def _reindex(self) -> None:
        index: dict[int, int] = {}
        for row, rec in enumerate(self.records):
            if rec.id in index:
                raise ValueError(f"VectorLibrary: duplicate vector id {rec.id}")
            index[rec.id] = row
        self._index = index

    # -- basic facts ------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def channels(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.records]

    def __contains__(self, vector_id: object) -> bool:
        return vector_id in self._index

    def record(self, vector_id: int) -> VectorRecord:
        try:
            return self.records[self._index[vector_id]]
        except KeyError:
            raise DatagenError(f"vector id {vector_id} is not in the library ({self._id_range()})") from None

    def rows(self, ids: Iterable[int]) -> list[int]:
        """Tensor rows of ``ids`` (in the given order); unknown ids raise DatagenError."""
        out = []
        for i in ids:
            if i not in self._index:
                raise DatagenError(f"vector id {i} is not in the library ({self._id_range()})")
            out.append(self._index[i])
        return out

    def get(self, ids: Iterable[int]) -> torch.Tensor:
        """The vectors (k, C) with these ids, in the given order."""
        return self.vectors[self.rows(list(ids))]

    def _id_range(self) -> str:
        if not self.records:
            return "the library is empty"
        ids = self.ids
        return f"{len(ids)} vectors, ids {min(ids)}..{max(ids)}"

    @property
    def clusters(self) -> list[int]:
        return sorted({r.cluster for r in self.records if r.cluster is not None})

    @property
    def labels(self) -> list[str]:
        return sorted({r.label for r in self.records if r.label is not None})

    # -- subsets ----------------------------------------------------------
    def select(self, ids: Iterable[int]) -> "VectorLibrary":
        """A new library with only these vectors (ids and records kept, in the given order)."""
        rows = self.rows(list(ids))
        out = copy.copy(self)
        out.vectors = self.vectors[rows].clone()
        out.records = [copy.copy(self.records[r]) for r in rows]
        out.extraction = copy.deepcopy(self.extraction)
        out.tileability = copy.deepcopy(self.tileability)
        out.clustering = copy.deepcopy(self.clustering)
        out._reindex()
        return out

    def by_cluster(self, k: int) -> "VectorLibrary":
        """The vectors assigned to cluster ``k`` (possibly empty)."""
        return self.select([r.id for r in self.records if r.cluster == k])

    def by_label(self, name: str) -> "VectorLibrary":
        """The vectors labelled ``name`` (exact match after stripping spaces; possibly empty)."""
        name = name.strip()
        return self.select([r.id for r in self.records if r.label == name])

    def set_label(self, ids: Iterable[int], name: str | None) -> None:
        """Label vectors ``ids`` as class ``name`` (None removes the label)."""
        try:
            name = _check_label(name)
        except ValueError as e:
            raise UsageError(str(e), param="name") from None
        for row in self.rows(list(ids)):
            self.records[row].label = name

    def set_scores(self, scores: torch.Tensor, info: dict[str, Any] | None = None) -> None:
        """Store tileability scores (N,) in row order, with how they were computed."""
        if len(scores) != len(self):
            raise ValueError(f"{len(scores)} scores for {len(self)} vectors")
        for rec, s in zip(self.records, scores.tolist()):
            rec.tileability = round(float(s), 6)
        if info is not None:
            self.tileability = dict(info)

    def set_clusters(self, labels: torch.Tensor, info: dict[str, Any] | None = None) -> None:
        """Store cluster assignments (N,) in row order, with how they were computed."""
        if len(labels) != len(self):
            raise ValueError(f"{len(labels)} cluster labels for {len(self)} vectors")
        for rec, c in zip(self.records, labels.tolist()):
            rec.cluster = int(c)
        if info is not None:
            self.clustering = dict(info)

    # -- disk ---------------------------------------------------------------
    def sidecar(self) -> dict[str, Any]:
        """The content of ``library.yaml`` as plain data."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "model": self.model,
            "layer": self.layer,
            "channels": self.channels,
            "image_size": list(self.image_size) if self.image_size is not None else None,
            "extraction": self.extraction,
            "tileability": self.tileability,
            "clustering": self.clustering,
            "tool_version": self.tool_version,
            "created": self.created,
            "notes": self.notes,
            "vectors": [asdict(r) for r in self.records],
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``vectors.safetensors`` and ``library.yaml`` (each atomically) into ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {
            "vectors": self.vectors.contiguous(),
            "ids": torch.tensor(self.ids, dtype=torch.int64),
        }
        with atomic_path(d / VECTORS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION)})
        atomic_write_text(d / SIDECAR_FILE, _dump_sidecar(self.sidecar()))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "VectorLibrary":
        """Read a library directory. Malformed files raise ConfigError naming file and field."""
        d = Path(directory)
        if not d.is_dir():
            raise ConfigError("vector library directory not found" if not d.exists() else
                              "a vector library is a directory (with vectors.safetensors and library.yaml)", file=d)
        tensor_path, yaml_path = d / VECTORS_FILE, d / SIDECAR_FILE
        if not yaml_path.exists() and not tensor_path.exists():
            raise ConfigError(f"not a vector library: no {SIDECAR_FILE} or {VECTORS_FILE} in this directory", file=d)
        try:
            raw = load_yaml(yaml_path, max_bytes=256 << 20, max_nodes=50_000_000, max_aliases=1_000_000)  # one record per vector
        except (UnicodeDecodeError, OSError) as e:
            raise ConfigError(f"cannot read the library description: {e}", file=yaml_path) from None
        if not isinstance(raw, dict):
            raise ConfigError("expected a mapping (model, layer, channels, vectors: [...])", file=yaml_path)
        meta = parse_model(_SidecarModel, raw, file=yaml_path)
        if not tensor_path.is_file():
            raise ConfigError("file not found (the vectors of this library)", file=tensor_path)
        try:
            from safetensors.torch import load_file

            tensors = load_file(str(tensor_path))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ConfigError(f"cannot read vectors: {e}", file=tensor_path) from None
        vectors, ids = tensors.get("vectors"), tensors.get("ids")
        if vectors is None or vectors.ndim != 2:
            raise ConfigError("expected a (N, C) tensor named 'vectors'", file=tensor_path)
        if ids is None or ids.shape != (len(vectors),):
            raise ConfigError(f"expected an ({len(vectors)},) tensor named 'ids'", file=tensor_path)
        if meta.channels != vectors.shape[1]:
            raise ConfigError(f"says {meta.channels} channels but {VECTORS_FILE} holds {vectors.shape[1]}-channel vectors",
                              file=yaml_path, field="channels")
        row_of = {int(i): r for r, i in enumerate(ids.tolist())}
        if len(row_of) != len(ids):
            raise ConfigError("duplicate vector ids", file=tensor_path)
        seen: set[int] = set()
        for j, rec in enumerate(meta.vectors):
            if rec.id in seen:
                raise ConfigError(f"duplicate vector id {rec.id}", file=yaml_path, field=f"vectors[{j}].id")
            if rec.id not in row_of:
                raise ConfigError(f"vector id {rec.id} has no vector in {VECTORS_FILE}", file=yaml_path, field=f"vectors[{j}].id")
            seen.add(rec.id)
        missing = sorted(set(row_of) - seen)
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ConfigError(f"{len(missing)} vectors of {VECTORS_FILE} have no record here (ids {shown}); "
                              "every vector needs a line under vectors:", file=yaml_path, field="vectors")
        records = [VectorRecord(**rec.model_dump()) for rec in meta.vectors]
        rows = [row_of[r.id] for r in records]
        return cls(
            vectors=vectors[rows].float(),
            records=records,
            model=meta.model,
            layer=meta.layer,
            image_size=tuple(meta.image_size) if meta.image_size is not None else None,
            extraction=meta.extraction,
            tileability=meta.tileability,
            clustering=meta.clustering,
            tool_version=meta.tool_version or "unknown",
            created=meta.created or "",
            notes=meta.notes,
        )

    def summary(self) -> str:
        """One paragraph for terminals and report headers."""
        parts = [f"{len(self)} vectors x {self.channels} channels", f"model {self.model}", f"layer {self.layer}"]
        if self.image_size:
            parts.append(f"extracted at {self.image_size[0]}x{self.image_size[1]}")
        if self.clustering:
            parts.append(f"{self.clustering.get('k')} clusters")
        scored = sum(r.tileability is not None for r in self.records)
        if scored:
            parts.append(f"{scored} scored for tileability")
        labelled = sum(r.label is not None for r in self.records)
        if labelled:
            parts.append(f"{labelled} labelled ({', '.join(self.labels)})")
        return ", ".join(parts)


# -- helpers -------------------------------------------------------------------
class _SidecarDumper(yaml.SafeDumper):
    """Block style for the document, one flow-style line per vector record."""


def _repr_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data.values()) and "id" in data
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _repr_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (int, float, str)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_SidecarDumper.add_representer(dict, _repr_dict)
_SidecarDumper.add_representer(list, _repr_list)

_SIDECAR_HEADER = (
    "# datagen vector library (see docs/vectors.md). Safe to edit by hand: set `label:` on a\n"
    "# vector to a class name (e.g. label: tumor) and a recipe can use it with `label: tumor`.\n"
    "# Do not change ids or channels; the vectors themselves live in vectors.safetensors.\n"
)


def _dump_sidecar(data: dict[str, Any]) -> str:
    return _SIDECAR_HEADER + yaml.dump(data, Dumper=_SidecarDumper, sort_keys=False, width=200, allow_unicode=True)


__all__ = ["VectorLibrary", "VectorRecord", "VECTORS_FILE", "SIDECAR_FILE"]


@contextmanager
def library_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the library directory itself while a block runs.

    Labelling is a read-modify-write of ``library.yaml``; two writers at once (a studio and a
    ``datagen vectors label`` in a shell, or two studio requests) would each keep only their
    own change. Locking the directory leaves no lock file behind in a shipped library; the
    kernel drops the lock if the holder dies. Without ``fcntl`` (Windows) it does not lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def label_vectors(directory: str | os.PathLike, ids: Iterable[int], name: str | None) -> VectorLibrary:
    """Label vectors ``ids`` of the library in ``directory`` as ``name`` (None clears) and save
    it, under :func:`library_lock`; returns the library as saved."""
    ids = list(ids)
    with library_lock(directory):
        lib = VectorLibrary.load(directory)
        lib.set_label(ids, name)
        lib.save(directory)
    return lib


def rename_label(directory: str | os.PathLike, old: str, new: str | None) -> tuple[VectorLibrary, list[int]]:
    """Rename label ``old`` to ``new`` (None or "" clears it) on every vector that has it, under
    :func:`library_lock`; returns the saved library and the ids changed."""
    with library_lock(directory):
        lib = VectorLibrary.load(directory)
        ids = [r.id for r in lib.records if r.label == (old or "").strip()]
        if not ids:
            raise DatagenError(f"no vector in {Path(directory).name} is labelled {old!r}; labels in use: "
                               f"{', '.join(lib.labels) or 'none'}")
        lib.set_label(ids, new or None)
        lib.save(directory)
    return lib, ids

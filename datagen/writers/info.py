"""What a dataset is: its description (:class:`DatasetInfo`), block arithmetic and ``info.json``.

Every output folder has an ``info.json`` (a :class:`DatasetInfo` plus the storage
format and layout version) at its root, written before anything else.  This module
depends on nothing else in :mod:`datagen.writers`, so the manifest, the writers and
the readers can all use it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datagen.errors import ConfigError, DatagenError

INFO_FILE = "info.json"
#: Version of the on-disk layout described in docs/formats.md.  2: the zarr group lives in
#: ``data.zarr/`` beside info.json and manifest/ (1: the output folder itself was the group).
LAYOUT_VERSION = 2


#: ``attrs`` keys that describe *how* or *when* a run was started rather than *what* it
#: generates.  They are stored in info.json but are not part of the fingerprint, so a
#: run may be resumed from another host, with another number of workers, later, ...
VOLATILE_ATTRS = frozenset(
    {
        "created",
        "created_at",
        "started_at",
        "hostname",
        "host",
        "user",
        "argv",
        "command",
        "pid",
        "device",
        "workers",
        "num_workers",
        "shard_index",
        "num_shards",
        "elapsed",
        "duration",
        # where the recipe file was, not what it says: its text ("recipe") is fingerprinted,
        # so the same recipe resumes from a relative path, another folder or another host
        "recipe_file",
    }
)

_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class DatasetInfo:
    """What a run generates; stored as ``info.json`` at the root of every output.

    ``classes`` is the class table: a list of ``{"id": int 0..255, "name": str,
    "color": "#rrggbb"}`` (plus optional keys such as ``"keep": true``); mask pixels
    hold these ids, or ``ignore_index`` where a pixel claims no class (keep regions,
    unpainted slivers; None when the dataset has no ignore value).  ``attrs`` is
    free-form JSON metadata (recipe text, seed, model, layer, tool version, ...).
    ``instances``: the output also holds an instance map per sample (uint32, one id per
    4-connected region of one class, 0 where the mask holds the ignore value).
    """

    num_samples: int
    height: int
    width: int
    classes: list[dict[str, Any]]
    block_size: int = 16
    attrs: dict[str, Any] = field(default_factory=dict)
    ignore_index: int | None = None
    instances: bool = False

    def __post_init__(self) -> None:
        for name in ("num_samples", "height", "width", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
            setattr(self, name, int(value))
        if not isinstance(self.classes, (list, tuple)) or not self.classes:
            raise ConfigError("must be a non-empty list of {id, name, color}", field="classes")
        classes: list[dict[str, Any]] = []
        seen: set[int] = set()
        for k, c in enumerate(self.classes):
            where = f"classes[{k}]"
            if not isinstance(c, dict):
                raise ConfigError(f"must be a mapping with id, name, color; got {c!r}", field=where)
            cid = c.get("id")
            if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)) or not 0 <= cid <= 255:
                raise ConfigError(f"id must be an integer 0..255 (masks are uint8), got {cid!r}", field=f"{where}.id")
            if int(cid) in seen:
                raise ConfigError(f"duplicate class id {cid}", field=f"{where}.id")
            seen.add(int(cid))
            name = c.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"name must be a non-empty string, got {name!r}", field=f"{where}.name")
            color = c.get("color")
            if not isinstance(color, str) or not _COLOR_RE.match(color):
                raise ConfigError(f'color must look like "#rrggbb", got {color!r}', field=f"{where}.color")
            extra = {k2: v for k2, v in c.items() if k2 not in ("id", "name", "color")}
            classes.append({"id": int(cid), "name": name, "color": color.lower(), **extra})
        self.classes = classes
        if self.ignore_index is not None:
            ig = self.ignore_index
            if isinstance(ig, bool) or not isinstance(ig, (int, np.integer)) or not 0 <= ig <= 255:
                raise ConfigError(f"must be an integer 0..255 (masks are uint8) or null, got {ig!r}", field="ignore_index")
            if int(ig) in seen:
                raise ConfigError(f"ignore value {ig} is also a class id", field="ignore_index")
            self.ignore_index = int(ig)
        if not isinstance(self.instances, bool):
            raise ConfigError(f"must be true or false, got {self.instances!r}", field="instances")
        if not isinstance(self.attrs, dict):
            raise ConfigError(f"must be a mapping, got {type(self.attrs).__name__}", field="attrs")
        try:
            json.dumps(self.attrs, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"must be JSON-serialisable: {exc}", field="attrs") from None

    # ---- block arithmetic -------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return -(-self.num_samples // self.block_size)

    def block_range(self, block: int) -> range:
        """The sample indices of ``block`` (the last block may be short)."""
        if not 0 <= block < self.num_blocks:
            raise IndexError(f"block {block} out of range: the dataset has {self.num_blocks} blocks")
        start = block * self.block_size
        return range(start, min(start + self.block_size, self.num_samples))

    def block_of(self, index: int) -> int:
        """The block that holds sample ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range: the dataset has {self.num_samples} samples")
        return index // self.block_size

    def shard_blocks(self, shard_index: int = 0, num_shards: int = 1) -> range:
        """The blocks worker ``shard_index`` of ``num_shards`` writes: b with b % num_shards == shard_index."""
        check_shard(shard_index, num_shards)
        return range(shard_index, self.num_blocks, num_shards)

    @property
    def class_ids(self) -> list[int]:
        return [c["id"] for c in self.classes]

    @property
    def mask_values(self) -> list[int]:
        """Every value a mask may hold: the class ids and the ignore value."""
        return self.class_ids + ([self.ignore_index] if self.ignore_index is not None else [])

    # ---- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {
            "num_samples": self.num_samples,
            "height": self.height,
            "width": self.width,
            "block_size": self.block_size,
            "classes": [dict(c) for c in self.classes],
            "attrs": json.loads(json.dumps(self.attrs)),
        }
        if self.ignore_index is not None:  # absent in datasets without one (older ones keep their fingerprint)
            d["ignore_index"] = self.ignore_index
        if self.instances:  # absent unless asked for, like ignore_index
            d["instances"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, file: str | os.PathLike | None = None) -> DatasetInfo:
        if not isinstance(d, dict):
            raise ConfigError("expected a JSON object", file=file)
        missing = [k for k in ("num_samples", "height", "width", "classes") if k not in d]
        if missing:
            raise ConfigError(f"missing required field(s): {', '.join(missing)}", file=file)
        try:
            return cls(
                num_samples=d["num_samples"],
                height=d["height"],
                width=d["width"],
                classes=d["classes"],
                block_size=d.get("block_size", 16),
                attrs=d.get("attrs", {}) or {},
                ignore_index=d.get("ignore_index"),
                instances=d.get("instances", False),
            )
        except ConfigError as exc:
            raise ConfigError(exc.message, file=file, field=exc.field) from None

    def fingerprint(self) -> str:
        """sha256 of everything that determines the generated data (volatile attrs excluded)."""
        doc = self._fingerprint_doc()
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _fingerprint_doc(self) -> dict[str, Any]:
        doc = self.to_dict()
        doc["attrs"] = {k: v for k, v in doc["attrs"].items() if k not in VOLATILE_ATTRS}
        return doc

    def differences(self, other: DatasetInfo) -> list[str]:
        """Human-readable list of the fingerprinted fields that differ (self = existing, other = new)."""
        a, b = self._fingerprint_doc(), other._fingerprint_doc()
        out: list[str] = []
        for key in ("num_samples", "height", "width", "block_size", "classes", "ignore_index", "instances"):
            if a.get(key) != b.get(key):
                out.append(f"{key}: existing {_short(a.get(key))}, new {_short(b.get(key))}")
        for key in sorted(set(a["attrs"]) | set(b["attrs"])):
            va, vb = a["attrs"].get(key, _MISSING), b["attrs"].get(key, _MISSING)
            if va != vb:
                out.append(f"attrs.{key}: existing {_short(va)}, new {_short(vb)}")
        return out


#: ``attrs`` holding large text that is stored once, in info.json; copies elsewhere (zarr.json,
#: TIFF page descriptions) carry ``<key>_sha256`` instead.
STORED_ONCE_ATTRS = ("recipe",)


def compact_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` for copies of the metadata: large texts (the recipe) replaced by their sha256."""
    out = {}
    for k, v in attrs.items():
        if k in STORED_ONCE_ATTRS and isinstance(v, str):
            out[f"{k}_sha256"] = hashlib.sha256(v.encode()).hexdigest()
        else:
            out[k] = v
    return out


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if isinstance(value, _Missing) else json.dumps(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def blocks_for_worker(info: DatasetInfo, shard_index: int, num_shards: int) -> list[range]:
    """The sample ranges of the blocks worker ``shard_index`` of ``num_shards`` writes: blocks b with b % M == K.

    The block number of a returned range ``r`` is ``r.start // info.block_size``.
    """
    return [info.block_range(b) for b in info.shard_blocks(shard_index, num_shards)]


def check_shard(shard_index: int, num_shards: int) -> None:
    """Refuse a shard index outside ``0..num_shards-1`` (or fewer than one shard)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in 0..{num_shards - 1}, got {shard_index}")


def load_info(path: str | os.PathLike) -> tuple[DatasetInfo, dict[str, Any]]:
    """Read ``<path>/info.json``: the DatasetInfo and the whole document (which also holds ``format``)."""
    file = Path(path) / INFO_FILE
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise DatagenError(f"{path}: not a datagen dataset (no {INFO_FILE})") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=file) from None
    if not isinstance(doc, dict):
        raise ConfigError("expected a JSON object", file=file)
    info = DatasetInfo.from_dict(doc.get("info", {}), file=file)
    return info, doc


def info_document(info: DatasetInfo, fmt: str) -> dict[str, Any]:
    """The whole ``info.json`` of a new output of format ``fmt``."""
    from datagen import __version__

    return {
        "datagen_dataset": LAYOUT_VERSION,
        "format": fmt,
        "fingerprint": info.fingerprint(),
        "writer_version": __version__,
        "info": info.to_dict(),
    }

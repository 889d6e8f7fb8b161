"""Data shipped with datagen: layout presets, vector libraries and example recipes.

In the repository they live in top-level folders (``layouts/``, ``vector_libraries/``,
``recipes/``); a wheel carries the same folders inside the package, under ``datagen/_data/``
(pyproject.toml maps each onto it), so relative paths between them (the demo recipe's
``../vector_libraries/tissue-small``) resolve in both. :func:`shipped_dir` finds whichever
copy this installation has, with importlib.resources for the packaged one, so preset names
and ``builtin:NAME`` recipes and libraries work from a source checkout, an editable install
and a wheel alike.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Literal

from .errors import ConfigError

Kind = Literal["presets", "libraries", "recipes"]

#: kind -> its folder at the repository root, and under ``datagen/_data/`` in a wheel
_FOLDERS: dict[str, str] = {"presets": "layouts", "libraries": "vector_libraries", "recipes": "recipes"}
#: What ``builtin:NAME`` means for each kind, for messages.
_WHAT = {"presets": "layout preset", "libraries": "vector library", "recipes": "recipe"}
BUILTIN = "builtin:"


def shipped_dir(kind: Kind) -> Path | None:
    """The folder holding the shipped ``kind`` (package data first, then the repository's folder), or None."""
    folder = _FOLDERS[kind]
    packaged = importlib.resources.files("datagen") / "_data" / folder
    if isinstance(packaged, Path) and packaged.is_dir():  # a wheel install (unzipped, as pip installs)
        return packaged
    repo = Path(__file__).resolve().parents[1] / folder  # a source checkout or an editable install
    return repo if repo.is_dir() else None


def shipped_names(kind: Kind) -> list[str]:
    """Names of the shipped items of ``kind``: ``*.yaml`` stems for presets and recipes, folders for libraries."""
    d = shipped_dir(kind)
    if d is None:
        return []
    if kind == "libraries":
        return sorted(p.name for p in d.iterdir() if (p / "library.yaml").is_file())
    return sorted(p.stem for p in d.glob("*.yaml"))


def shipped_path(kind: Kind, name: str, *, field: str | None = None, file: str | Path | None = None) -> Path:
    """The file or folder of the shipped ``kind`` called ``name`` (``builtin:`` prefix allowed);
    ConfigError listing the valid names when there is none."""
    name = name.removeprefix(BUILTIN)
    d = shipped_dir(kind)
    if d is not None and name and "/" not in name and "\\" not in name and name not in (".", ".."):
        p = d / name if kind == "libraries" else d / f"{name}.yaml"
        if p.exists():
            return p
    names = ", ".join(shipped_names(kind)) or "(none installed)"
    raise ConfigError(f"unknown built-in {_WHAT[kind]} '{name}'; expected one of: {names}", file=file, field=field)

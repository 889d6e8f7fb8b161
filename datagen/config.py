"""YAML loading and pydantic validation that fail with file, field and expectation.

Every configuration file the tool reads (recipes, layouts, training configs)
goes through :func:`load_yaml` and :func:`parse_model`, so every mistake is
reported the same way: ``recipe.yaml: classes[2].color: expected ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; syntax errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("file not found" if not p.exists() else "not a file", file=p)
    try:
        return yaml.safe_load(p.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"invalid YAML: {where}{e.problem or e}", file=p) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=p) from None


def field_path(loc: tuple[Any, ...], prefix: str | None = None) -> str:
    """pydantic location tuple -> ``classes[2].color``."""
    out = prefix or ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe_validation_error(err: dict[str, Any]) -> str:
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "missing":
        return "required field is missing"
    if err.get("type") == "value_error":  # our validators' messages already say what they got
        return str(msg).removeprefix("Value error, ")
    inp = err.get("input")
    if inp is not None and err.get("type") not in ("missing",):
        shown = repr(inp)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"{msg} (got {shown})"
    return msg


def parse_model(model: type[M], data: Any, *, file: str | os.PathLike | None = None, prefix: str | None = None) -> M:
    """Validate ``data`` as ``model``; the first error becomes a :class:`ConfigError`.

    All errors are listed in the message when there are several, one per line.
    """
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as e:
        errs = e.errors()
        first = errs[0]
        msg = describe_validation_error(first)
        if len(errs) > 1:
            rest = "; ".join(f"{field_path(x['loc'], prefix)}: {describe_validation_error(x)}" for x in errs[1:4])
            msg += f" (also: {rest}{'; ...' if len(errs) > 4 else ''})"
        raise ConfigError(msg, file=file, field=field_path(first["loc"], prefix)) from None

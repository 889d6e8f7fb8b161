"""YAML loading and pydantic validation that fail with file, field and expectation.

Every configuration file the tool reads (recipes, layouts, training configs)
goes through :func:`load_yaml` and :func:`parse_model`, so every mistake is
reported the same way: ``recipe.yaml: classes[2].color: expected ...``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)


#: Bounds on every YAML file the tool reads (recipes, layouts, training configs): a recipe is a few
#: KB, so these only stop mistakes and "billion laughs" alias bombs, which would otherwise expand
#: into gigabytes while being validated or quoted in an error message.
MAX_YAML_BYTES = 1 << 20
#: Nodes after expanding every alias (``*name``): a bomb of nested aliases is refused before it is built.
MAX_YAML_NODES = 200_000
MAX_YAML_ALIASES = 10_000
#: Nesting depth of mappings and lists (deeper input would overflow the parser's recursion).
MAX_YAML_DEPTH = 64
#: Longest excerpt of a user value quoted in an error message.
EXCERPT_CHARS = 80


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to at most ``limit`` characters (``...`` marks the cut).

    Built with :mod:`reprlib` so that a huge or deeply nested value is never rendered whole.
    """
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 8, 8, 6, 6
    r.maxstring = r.maxother = r.maxlong = limit
    try:
        shown = r.repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        shown = f"<{type(value).__name__}>"
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _check_yaml_bounds(text: str, file: Path, *, max_nodes: int, max_aliases: int, max_depth: int) -> None:
    """Walk the YAML event stream (no objects are built) and refuse input that would expand past
    ``max_nodes`` nodes, use more than ``max_aliases`` aliases or nest deeper than ``max_depth``."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    sizes: dict[str, int] = {}  # anchor -> expanded node count of the anchored node
    stack: list[list[Any]] = []  # open collections: [expanded count so far, anchor]
    total = aliases = 0

    def close(count: int, anchor: str | None) -> None:
        nonlocal total
        if anchor:
            sizes[anchor] = count
        if stack:
            stack[-1][0] += count
        else:
            total += count
        if total + sum(s[0] for s in stack) > max_nodes:
            raise ConfigError(
                f"too large: the YAML expands to more than {max_nodes:,} values (aliases like *name count once "
                "per use); expected a recipe/config of at most a few thousand values", file=file)

    for ev in yaml.parse(text, Loader=loader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([1, ev.anchor])
            if len(stack) > max_depth:
                raise ConfigError(f"nested too deeply (more than {max_depth} levels of lists/mappings); "
                                  "expected a flat recipe/config", file=file)
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            count, anchor = stack.pop()
            close(count, anchor)
        elif isinstance(ev, yaml.ScalarEvent):
            close(1, ev.anchor)
        elif isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > max_aliases:
                raise ConfigError(f"too many aliases (*name): more than {max_aliases:,}; expected a plain "
                                  "recipe/config", file=file)
            close(sizes.get(ev.anchor, 1), None)


def load_yaml(path: str | os.PathLike, *, max_bytes: int = MAX_YAML_BYTES, max_nodes: int = MAX_YAML_NODES,
              max_aliases: int = MAX_YAML_ALIASES, max_depth: int = MAX_YAML_DEPTH) -> Any:
    """Parse a YAML file; syntax errors name the file and line.

    Input is bounded: a file over ``max_bytes``, one whose aliases expand past ``max_nodes``
    values ("billion laughs"), with more than ``max_aliases`` aliases or nested deeper than
    ``max_depth`` is refused with a :class:`ConfigError` before any object is built.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("file not found" if not p.exists() else "not a file", file=p)
    size = p.stat().st_size
    if size > max_bytes:
        raise ConfigError(f"too large ({size:,} bytes); expected a YAML file of at most {max_bytes:,} bytes", file=p)
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew since stat, or a special file
            raise ConfigError(f"too large; expected a YAML file of at most {max_bytes:,} bytes", file=p)
        text = data.decode("utf-8")
        _check_yaml_bounds(text, p, max_nodes=max_nodes, max_aliases=max_aliases, max_depth=max_depth)
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"invalid YAML: {where}{e.problem or e}", file=p) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {excerpt(str(e), 200)}", file=p) from None
    except RecursionError:
        raise ConfigError(f"nested too deeply; expected at most {max_depth} levels of lists/mappings", file=p) from None


def field_path(loc: tuple[Any, ...], prefix: str | None = None) -> str:
    """pydantic location tuple -> ``classes[2].color``."""
    out = prefix or ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def model_at(model: type[BaseModel], path: Sequence[Any]) -> type[BaseModel] | None:
    """The nested model that a pydantic location leads into, or None where it leaves models.

    Each part that names a field of the current model follows that field into the model
    its annotation holds (inside lists, dicts, unions, ``Annotated``); list indices and
    dict keys are passed over. ``model_at(Recipe, ("classes", 2))`` is ``ClassSpec``.
    """
    current: type[BaseModel] | None = model
    for part in path:
        info = current.model_fields.get(part) if current is not None and isinstance(part, str) else None
        if info is None:
            continue
        current, stack = None, [info.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                current = t
                break
            stack.extend(getattr(t, "__args__", None) or ())
    return current


def describe_validation_error(err: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    """One pydantic error as a sentence saying what was expected.

    With the validated ``model``, an unknown field lists the fields allowed there, a
    missing field quotes its ``Field(description=...)`` as the expectation, and a value
    that should be a mapping names that mapping's fields.
    """
    msg = err.get("msg", "invalid value")
    kind, loc = err.get("type"), tuple(err.get("loc", ()))
    if kind == "extra_forbidden":
        owner = model_at(model, loc[:-1]) if model is not None and loc else None
        if owner is None:
            return "unknown field"
        return f"unknown field {str(loc[-1])!r}; expected one of: {', '.join(owner.model_fields)}"
    if kind == "missing":
        owner = model_at(model, loc[:-1]) if model is not None and loc else None
        info = owner.model_fields.get(loc[-1]) if owner is not None else None
        hint = info.description if info is not None else None
        return "required field is missing" + (f"; expected {hint}" if hint else "")
    if kind == "value_error":  # our validators' messages already say what they got
        return str(msg).removeprefix("Value error, ")
    if model is not None and kind in ("model_type", "model_attributes_type", "dict_type"):
        target = model_at(model, loc)
        what = f"a mapping {{{', '.join(target.model_fields)}}}" if target is not None else "a mapping"
        return f"expected {what}, got {excerpt(err.get('input'))}"
    inp = err.get("input")
    if inp is not None:
        return f"{msg} (got {excerpt(inp)})"
    return msg


def validation_config_error(err: ValidationError, model: type[BaseModel], *, file: str | os.PathLike | None = None,
                            prefix: str | None = None,
                            describe: Callable[[dict[str, Any], type[BaseModel]], str] | None = None) -> ConfigError:
    """A pydantic error as one :class:`ConfigError`: the first problem names its field, up to
    three more follow (``(also: field: problem; ...)``). ``describe`` words each problem
    (default :func:`describe_validation_error`)."""
    describe = describe or describe_validation_error
    errs = err.errors(include_url=False)
    first = errs[0]
    msg = describe(first, model)
    if len(errs) > 1:
        rest = "; ".join(f"{field_path(x['loc'], prefix)}: {describe(x, model)}" for x in errs[1:4])
        msg += f" (also: {rest}{'; ...' if len(errs) > 4 else ''})"
    return ConfigError(msg, file=file, field=field_path(first["loc"], prefix))


def parse_model(model: type[M], data: Any, *, file: str | os.PathLike | None = None, prefix: str | None = None) -> M:
    """Validate ``data`` as ``model``; the first error becomes a :class:`ConfigError`.

    Up to three more errors follow in the message (``(also: field: problem; ...)``). A
    ConfigError that one of the model's own validators raises gets ``file`` (and ``prefix``).
    """
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as e:
        raise validation_config_error(e, model, file=file, prefix=prefix) from None
    except ConfigError as e:
        if e.file is not None:
            raise
        field = f"{prefix}.{e.field}" if prefix and e.field else (e.field or prefix)
        raise ConfigError(e.message, file=file, field=field) from None

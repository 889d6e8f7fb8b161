"""User-facing errors. The CLI prints these as one clear message and exits non-zero.

Every error caused by user input (a file, an argument value, a recipe) is a
:class:`DatagenError`; anything else is a bug and the CLI shows its traceback.

* :class:`ConfigError` -- a bad value in a file: says which file, which field and
  what was expected, so a user can fix a recipe without reading a traceback.
* :class:`UsageError` -- a bad argument value (also a ``ValueError``): ``param``
  names the argument. ``str()`` speaks Python (``num: must be at least 1, got 0``);
  the CLI renders the same error with its flag (``--num: must be at least 1, got 0``).

A message may mention other arguments with :func:`arg`, e.g.
``f"pass {arg('resume', True)} to continue"``: ``str()`` shows ``resume=True``,
the CLI ``--resume``. Library code never writes a flag itself.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Callable
from typing import Any

#: ``arg()`` mentions inside a raw message: \x1f name \x1e repr(value) or empty \x1f
_MENTION = re.compile("\x1f([A-Za-z_][A-Za-z0-9_]*)\x1e([^\x1f]*)\x1f")
_NO_VALUE = ""

#: How an argument is named: (parameter name, repr of a value or "") -> text.
Namer = Callable[[str, str], str]


def arg(name: str, value: Any = _NO_VALUE) -> str:
    """Mention argument ``name`` (optionally with a value to pass) inside an error message.

    Rendered ``name`` / ``name=value`` by ``str(error)`` and ``--name`` / ``--name value``
    by the CLI."""
    return f"\x1f{name}\x1e{'' if value is _NO_VALUE else repr(value)}\x1f"


def python_name(name: str, value: str = _NO_VALUE) -> str:
    """API spelling of an argument mention: ``num`` or ``resume=True``."""
    return f"{name}={value}" if value else name


def flag_name(name: str, value: str = _NO_VALUE, flag: str | None = None) -> str:
    """CLI spelling of an argument mention: ``--num``, ``--resume``, ``--device cpu``."""
    flag = flag or "--" + name.replace("_", "-")
    if not value or value == "True":
        return flag
    try:
        v = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        v = value
    return f"{flag} {v}"


def render(text: str, namer: Namer = python_name) -> str:
    """``text`` with its :func:`arg` mentions spelled by ``namer``."""
    return _MENTION.sub(lambda m: namer(m.group(1), m.group(2)), text)


def message_of(exc: BaseException) -> str:
    """The raw message of ``exc`` (mentions kept, no ``param:`` prefix), to wrap it in another error."""
    if isinstance(exc, DatagenError):
        return exc.message
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def _restore(cls: type, args: tuple, state: dict) -> BaseException:
    e = cls.__new__(cls)
    e.args = args
    e.__dict__.update(state)
    return e


class DatagenError(Exception):
    """Base class for errors caused by user input (files, options, recipes).

    ``param``: the argument at fault, as a Python parameter name (``batch_size``), or None."""

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        self.message = str(message)
        self.param = param
        super().__init__(self.render())

    def render(self, namer: Namer = python_name) -> str:
        """The message with arguments spelled by ``namer`` (``str()`` uses Python names)."""
        text = render(self.message, namer)
        return f"{namer(self.param, _NO_VALUE)}: {text}" if self.param else text

    def __str__(self) -> str:  # also for the KeyError subclasses, which would quote the message
        return self.render()

    def __reduce__(self):  # type: ignore[no-untyped-def]  # keep param/file/field across processes (Ray)
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class UsageError(DatagenError, ValueError):
    """A bad argument value: ``UsageError("must be at least 1, got 0", param="num")``."""


class ConfigError(DatagenError):
    """A bad value in a configuration file: ``file: field: problem``."""

    def __init__(self, message: str, *, file: str | os.PathLike | None = None, field: str | None = None,
                 param: str | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.field = field
        super().__init__(message, param=param)

    def render(self, namer: Namer = python_name) -> str:
        where = ": ".join(p for p in (namer(self.param, _NO_VALUE) if self.param else None, self.file, self.field) if p)
        text = render(self.message, namer)
        return f"{where}: {text}" if where else text


__all__ = ["ConfigError", "DatagenError", "UsageError", "arg", "flag_name", "message_of", "python_name", "render"]

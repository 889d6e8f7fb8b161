"""User-facing errors. The CLI prints these as one clear message and exits non-zero.

A :class:`ConfigError` always says which file, which field and what was expected,
so a user can fix a recipe without reading a traceback.
"""

from __future__ import annotations

import os


class DatagenError(Exception):
    """Base class for errors caused by user input (files, options, recipes)."""


class ConfigError(DatagenError):
    """A bad value in a configuration file: ``file: field: problem``."""

    def __init__(self, message: str, *, file: str | os.PathLike | None = None, field: str | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.field = field
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        return f"{where}: {self.message}" if where else self.message

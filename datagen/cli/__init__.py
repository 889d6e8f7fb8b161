"""The ``datagen`` command line: one module per command group, thin over the library."""

from __future__ import annotations

from .app import build_parser, main

__all__ = ["build_parser", "main"]

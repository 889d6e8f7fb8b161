"""Exports of datagen outputs to other tools' formats, one file per format.

:mod:`datagen.export.geojson`: masks (of a dataset's samples or of a canvas) as QuPath-style
GeoJSON annotations. Nothing heavy is imported here: the format modules load their optional
dependencies (``pip install 'datagen[export]'``) when called.
"""

from __future__ import annotations

from typing import Any

_GEOJSON = ("export_canvas_geojson", "export_dataset_geojson", "mask_to_features")


def __getattr__(name: str) -> Any:  # lazy: importing datagen.export costs nothing
    if name in _GEOJSON:
        from . import geojson

        return getattr(geojson, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_GEOJSON)

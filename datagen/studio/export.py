"""A painted map as a recipe ``datagen generate`` accepts: the YAML a person would write, with
the map as its ``kind: mask`` layout."""

from __future__ import annotations

from typing import Any

import yaml

class _RecipeDumper(yaml.SafeDumper):
    """Recipes as people write them: a mapping or list of plain values on one line (classes, paint, size)."""


def _flat(v: Any) -> bool:
    return not isinstance(v, (dict, list)) or (isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v))


_RecipeDumper.add_representer(dict, lambda d, data: d.represent_mapping(
    "tag:yaml.org,2002:map", data.items(), flow_style=all(_flat(v) for v in data.values())))
_RecipeDumper.add_representer(list, lambda d, data: d.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=all(not isinstance(v, (dict, list)) for v in data)))


def painted_recipe_yaml(recipe: Any, layer: str | None, *, source: str, eraser_id: int,
                        layout_file: str = "layout.png", index: int | None = None) -> str:
    """``recipe`` (a :class:`datagen.recipe.Recipe`) as painted, with the painted map as its layout
    (``kind: mask``, ``layout_file`` beside the recipe): ``datagen generate`` on it paints the same
    map with new noise per sample. ``layer``: the renderer's paint layer; ``eraser_id``: the id of
    the keep class the page erases with; ``source``: what the session loaded (for the header)."""
    r = recipe
    data = r.model_dump(mode="json", exclude_defaults=True)
    data.pop("layout", None)
    out: dict[str, Any] = {"model": r.model_spec}
    if layer:
        out["layer"] = layer
    if r.library_path is not None:
        out["library"] = str(r.library_path.resolve())
    out["size"] = [int(s) for s in r.size]
    out["classes"] = [{"name": c.name, "id": c.id, "color": c.color,
                       **c.model_dump(mode="json", exclude_defaults=True, exclude={"name", "id", "color"})}
                      for c in r.classes]
    out["layout"] = {"kind": "mask", "path": layout_file}
    out["paint"] = r.paint.model_dump(mode="json")
    out["ignore_index"] = r.ignore_index
    for k, v in data.items():  # anything else the recipe set (augment, trust, ...)
        out.setdefault(k, v)
    eraser = next(c.name for c in r.classes if c.id == eraser_id)
    head = (f"# datagen studio: {source} painted by hand"
            f"{f' (sample index {index})' if index is not None else ''}; the layout is the painted map\n"
            f"# ({layout_file}; {eraser} = the generator's own activations, written as the ignore value).\n"
            f"#   datagen generate THIS.yaml --out DIR --num N   # the same map, new noise per sample\n")
    return head + yaml.dump(out, Dumper=_RecipeDumper, sort_keys=False, width=120, allow_unicode=True)

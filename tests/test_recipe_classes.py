"""Recipe schema and its checks against a model and a vector library: every error is a ConfigError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from datagen.errors import ConfigError
from datagen.models import DigipathGenerator, DigipathUNet, UNetConfig
from datagen.recipe import Recipe, load_recipe, resolve_class_vector_ids, resolve_class_vectors
from datagen.vectors import VectorLibrary, VectorRecord

MODEL = "builtin:test-tiny"


@pytest.fixture(scope="module")
def gen() -> DigipathGenerator:
    torch.manual_seed(0)
    return DigipathGenerator(DigipathUNet(UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, default_layer="dec.x4")))


def make_library(channels: int = 16, model: str = MODEL, layer: str = "dec.x4") -> VectorLibrary:
    g = torch.Generator().manual_seed(0)
    recs = [VectorRecord(id=i, image=i, y=0, x=0, seed=0, cluster=i % 3) for i in range(8)]
    lib = VectorLibrary(torch.randn(8, channels, generator=g), recs, model=model, layer=layer, image_size=(48, 48))
    lib.set_label([5, 6], "stroma")
    return lib


def base_recipe() -> dict:
    return {
        "model": MODEL,
        "layer": "dec.x4",
        "library": "libs/tiny",
        "size": [48, 48],
        "classes": [
            {"name": "background", "id": 0, "color": "#F2F2F2", "keep": True},
            {"name": "tumor", "id": 1, "color": "#d62728", "vectors": [1, {"id": 2, "weight": 3.0}]},
            {"name": "stroma", "id": 2, "color": [31, 119, 180], "label": "stroma", "weight": 2},
            {"name": "necrosis", "id": 3, "color": "#abc", "clusters": [2]},
        ],
        "layout": {"kind": "voronoi", "cells": 12},
        "paint": {"soft_boundary": 0.25},
        "augment": [{"name": "HorizontalFlip", "p": 0.5}],
    }


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    make_library().save(tmp_path / "libs" / "tiny")
    return tmp_path


def write(workdir: Path, data: dict | str, name: str = "recipe.yaml") -> Path:
    p = workdir / "recipes" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, dict):
        data = {**data, "library": "../" + data["library"]} if data.get("library") else data
        p.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        p.write_text(data)
    return p


def cli_path(path: Path, gen: DigipathGenerator) -> dict:
    """What `datagen generate` does before rendering."""
    recipe = load_recipe(path)
    library = recipe.load_library()
    recipe.validate_against(gen, library)
    return resolve_class_vectors(recipe, library) if library is not None else {}


# -- the happy path -----------------------------------------------------------------------
def test_valid_recipe_loads_and_resolves(workdir: Path, gen: DigipathGenerator) -> None:
    path = write(workdir, base_recipe())
    recipe = load_recipe(path)
    assert recipe.size == (48, 48) and recipe.file == path
    assert recipe.library_path == path.parent / "../libs/tiny"
    assert [c.color for c in recipe.classes] == ["#f2f2f2", "#d62728", "#1f77b4", "#aabbcc"]
    assert recipe.palette()[2] == (31, 119, 180)
    assert recipe.paint.soft_boundary == 0.25 and recipe.paint.resize == "nearest"
    assert recipe.layout == {"kind": "voronoi", "cells": 12}
    assert recipe.augment == [{"name": "HorizontalFlip", "p": 0.5}]
    vectors = cli_path(path, gen)
    assert set(vectors) == {"tumor", "stroma", "necrosis"}  # keep classes paint nothing
    lib = recipe.load_library()
    ids = resolve_class_vector_ids(recipe, lib)
    assert ids["tumor"] == ([1, 2], [0.25, 0.75])
    assert ids["stroma"][0] == [5, 6] and ids["necrosis"][0] == [2, 5]
    v, w = vectors["tumor"]
    assert torch.equal(v, lib.get([1, 2])) and torch.allclose(w, torch.tensor([0.25, 0.75]))


def test_defaults_and_single_int_size(workdir: Path, gen: DigipathGenerator) -> None:
    data = {"size": 48, "classes": [{"name": "bg", "id": 0, "color": "#000", "keep": True}]}
    recipe = load_recipe(write(workdir, data))
    assert recipe.model == "builtin:tissue-small" and recipe.layer is None and recipe.library is None
    assert recipe.size == (48, 48) and recipe.paint.soft_boundary == 0.0 and recipe.augment == []
    assert cli_path(write(workdir, data), gen) == {}  # default layer dec.x4 of this generator exists


def test_union_of_sources_keeps_explicit_weight(workdir: Path) -> None:
    data = base_recipe()
    data["classes"][1]["clusters"] = [1]  # cluster 1: ids 1, 4, 7
    recipe = load_recipe(write(workdir, data))
    ids, w = resolve_class_vector_ids(recipe, recipe.load_library())["tumor"]
    assert ids == [1, 2, 4, 7]
    assert w == pytest.approx([1 / 6, 3 / 6, 1 / 6, 1 / 6])


def test_layout_defaults_to_class_weights_and_checks_names(workdir: Path) -> None:
    recipe = load_recipe(write(workdir, base_recipe()))
    assert recipe.layout_data()["classes"] == {"background": 1.0, "tumor": 1.0, "stroma": 2.0, "necrosis": 1.0}
    assert recipe.parsed_layout().class_names() == {"background", "tumor", "stroma", "necrosis"}
    e = _error(workdir, mutate(lambda d: d.update(layout={"kind": "voronoi", "classes": {"tumor": 1, "fat": 2}})))
    assert e.field == "layout.classes.fat" and "unknown class 'fat'" in str(e)
    e = _error(workdir, mutate(lambda d: d.update(layout={"kind": "hexagons"})))
    assert e.field == "layout.kind" and "voronoi" in str(e)


def test_docs_example_recipe_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[1] / "docs" / "vectors.md").read_text()
    block = next(b for b in doc.split("```yaml")[1:] if b.lstrip().startswith("model:")).split("```")[0]
    recipe = load_recipe(write(tmp_path, block))
    assert [c.name for c in recipe.classes] == ["background", "tumor", "stroma", "lymphocytes"]
    assert recipe.classes[3].color == "#2ca02c" and recipe.size == (256, 256)


# -- schema errors ---------------------------------------------------------------------------
def _error(workdir: Path, data: dict | str, gen: DigipathGenerator | None = None) -> ConfigError:
    path = write(workdir, data)
    with pytest.raises(ConfigError) as e:
        if gen is None:
            load_recipe(path)
        else:
            cli_path(path, gen)
    assert e.value.file == str(path), e.value
    return e.value


def mutate(fn) -> dict:
    data = base_recipe()
    fn(data)
    return data


def test_yaml_syntax_error_names_line(workdir: Path) -> None:
    text = "size: 48\nclasses:\n  - name: a\n    id: [1\n    color: '#fff'\n"
    e = _error(workdir, text)
    assert "invalid YAML" in str(e) and "line " in str(e)
    e = _error(workdir, "size: 48\nclasses: [\n")
    assert "line 3" in str(e)  # unexpected end of the document


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d["classes"][2].update(color="#zzzzzz"), "classes[2].color", ["#rrggbb", "#zzzzzz"]),
        (lambda d: d["classes"][2].update(color=None), "classes[2].color", ["quote it"]),
        (lambda d: d["classes"][1].update(id=256), "classes[1].id", ["255"]),
        (lambda d: d["classes"][1].update(colour="red"), "classes[1].colour", ["unknown field", "color"]),
        (lambda d: d.update(sise=48), "sise", ["unknown field", "size"]),
        (lambda d: d.pop("size"), "size", ["required", "expected [height, width]"]),
        (lambda d: d["classes"][1].pop("id"), "classes[1].id", ["required", "0..255"]),
        (lambda d: d["classes"].__setitem__(1, "tumor"), "classes[1]",
         ["expected a mapping {name, id, color, keep, vectors, clusters, label, weight, paint, grid, between, units}", "'tumor'"]),
        (lambda d: d.update(paint=3), "paint", ["expected a mapping {soft_boundary, resize, mask"]),
        (lambda d: d.update(size=[48]), "size", ["height, width"]),
        (lambda d: d.update(size=[48, -8]), "size[1]", ["greater than or equal to 1"]),
        (lambda d: d.update(classes=[]), "classes", ["at least 1"]),
        (lambda d: d["classes"][1].update(vectors=[1, "x"]), "classes[1].vectors[1]", ["vector id"]),
        (lambda d: d["classes"][1].update(vectors=[{"id": 1, "weight": 0}]), "classes[1].vectors[0].weight",
         ["greater than 0"]),
        (lambda d: d["classes"][3].update(clusters=[-1]), "classes[3].clusters[0]", ["greater than or equal to 0"]),
        (lambda d: d["paint"].update(soft_boundary=1.5), "paint.soft_boundary", ["less than or equal to 1"]),
        (lambda d: d["paint"].update(resize="bilinear"), "paint.resize", ["nearest"]),
        (lambda d: d.update(augment=[{"p": 0.5}]), "augment[0]", ["name: HorizontalFlip"]),
        (lambda d: d.update(layout=3), "layout", ["kind: voronoi"]),
        (lambda d: d["classes"][2].update(id=1), "classes[2].id", ["duplicate class id", "classes[1]", "tumor"]),
        (lambda d: d["classes"][2].update(name="tumor"), "classes[2].name", ["duplicate class name"]),
        (lambda d: d["classes"][3].update(color="#D62728"), "classes[3].color", ["duplicate class color", "#d62728"]),
        (lambda d: d["classes"][1].pop("vectors"), "classes[1]", ["paints nothing", "vectors", "keep: true"]),
        (lambda d: d["classes"][1].update(vectors=[]), "classes[1]", ["paints nothing"]),
        (lambda d: d["classes"][0].update(vectors=[1]), "classes[0]", ["keep: true", "vectors"]),
        (lambda d: d.pop("library"), "library", ["required"]),
    ],
)
def test_schema_errors(workdir: Path, change, field: str, words: list[str]) -> None:
    e = _error(workdir, mutate(change))
    assert e.field == field, str(e)
    for w in words:
        assert w in str(e), str(e)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["empty"]),
        ("- a\n- b\n", ["expected a mapping", "list"]),
        ("just a string\n", ["expected a mapping"]),
    ],
)
def test_not_a_mapping(workdir: Path, text: str, words: list[str]) -> None:
    e = _error(workdir, text)
    for w in words:
        assert w in str(e)


def test_missing_and_unreadable_files(workdir: Path, gen: DigipathGenerator) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(workdir / "nope.yaml")
    with pytest.raises(ConfigError, match="not a file"):
        load_recipe(workdir)
    p = workdir / "binary.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    with pytest.raises(ConfigError):
        load_recipe(p)


# -- checks against model and library ------------------------------------------------------
def test_unknown_vector_empty_cluster_unused_label(workdir: Path, gen: DigipathGenerator) -> None:
    e = _error(workdir, mutate(lambda d: d["classes"][1].update(vectors=[1, 99])), gen)
    assert e.field == "classes[1].vectors[1]" and "vector id 99 is not in the library" in str(e) and "0..7" in str(e)
    e = _error(workdir, mutate(lambda d: d["classes"][3].update(clusters=[5])), gen)
    assert e.field == "classes[3].clusters[0]" and "cluster 5 has no vectors" in str(e) and "0, 1, 2" in str(e)
    e = _error(workdir, mutate(lambda d: d["classes"][2].update(label="tumour")), gen)
    assert e.field == "classes[2].label" and "'tumour'" in str(e) and "stroma" in str(e)


def test_channel_model_and_layer_mismatches(workdir: Path, gen: DigipathGenerator) -> None:
    make_library(channels=8).save(workdir / "libs" / "narrow")
    e = _error(workdir, mutate(lambda d: d.update(library="libs/narrow")), gen)
    assert e.field == "library" and "8 channels" in str(e) and "16 channels" in str(e)

    make_library(model="builtin:other").save(workdir / "libs" / "other")
    e = _error(workdir, mutate(lambda d: d.update(library="libs/other")), gen)
    assert e.field == "model" and "builtin:other" in str(e) and MODEL in str(e)

    e = _error(workdir, mutate(lambda d: d.update(layer="dec.x2")), gen)  # exists, 16 channels, other layer
    assert e.field == "layer" and "'dec.x4'" in str(e) and "'dec.x2'" in str(e)

    e = _error(workdir, mutate(lambda d: d.update(layer="dec.x16")), gen)
    assert e.field == "layer" and "no layer 'dec.x16'" in str(e) and "dec.x4" in str(e)


def test_default_layer_is_used_and_named(workdir: Path, gen: DigipathGenerator) -> None:
    data = mutate(lambda d: d.pop("layer"))
    assert set(cli_path(write(workdir, data), gen)) == {"tumor", "stroma", "necrosis"}
    make_library(layer="dec.x2").save(workdir / "libs" / "x2")
    e = _error(workdir, mutate(lambda d: (d.pop("layer"), d.update(library="libs/x2"))), gen)
    assert e.field == "layer" and "default layer" in str(e) and "dec.x2" in str(e)


def test_size_and_missing_library(workdir: Path, gen: DigipathGenerator) -> None:
    e = _error(workdir, mutate(lambda d: d.update(size=[50, 48])), gen)
    assert e.field == "size" and "multiple of 8" in str(e)
    e = _error(workdir, mutate(lambda d: d.update(library="libs/missing")), gen)
    assert e.field == "library" and "not found" in str(e)


def test_broken_library_sidecar_is_config_error(workdir: Path, gen: DigipathGenerator) -> None:
    side = workdir / "libs" / "tiny" / "library.yaml"
    side.write_text(side.read_text().replace("layer: dec.x4", "layer: [oops"))
    with pytest.raises(ConfigError) as e:
        cli_path(write(workdir, base_recipe()), gen)
    assert Path(e.value.file).resolve() == side.resolve() and "line" in str(e.value)


# -- the CLI path raises nothing but ConfigError --------------------------------------------
GARBAGE = [
    "size: 48\nclasses: 3\n",
    "size: 48\nclasses: [3, 'a', null]\n",
    "size: {a: 1}\nclasses: []\n",
    "size: 48\nlibrary: 7\nclasses:\n  - {name: [1], id: x, color: 5, keep: maybe}\n",
    "size: 48\nlibrary: ../libs/tiny\nclasses:\n  - {name: a, id: 1, color: '#fff', vectors: 3}\n",
    "size: 48\nlibrary: ../libs/tiny\nclasses:\n  - {name: a, id: 1, color: '#fff', vectors: [{id: 1, w: 2}]}\n",
    "size: 48\nlibrary: ../libs/tiny\nclasses:\n  - {name: a, id: 1, color: '#fff', label: ''}\n",
    "size: 48\nlibrary: ../libs/tiny\nmodel: ''\nclasses:\n  - {name: a, id: 1, color: '#fff', keep: true}\n",
    "size: 48\nlibrary: ../libs/tiny\nclasses:\n  - {name: a, id: 1, color: '#fff', clusters: 2}\n",
    "size: 48\nlibrary: ../libs/tiny\nclasses:\n  - {name: a, id: 1, color: '#fff', keep: true}\naugment: {name: x}\n",
    "size: 48\nlibrary: ../libs\nclasses:\n  - {name: a, id: 1, color: '#fff', vectors: [1]}\n",
    "size: 48\nlibrary: ../libs/tiny\nclasses:\n  - {name: a, id: 1, color: '#fff', vectors: [1.5]}\n",
    "size: 48\nlibrary: ../libs/tiny\nclasses:\n  - {name: a, id: true, color: '#fff', keep: true}\n",
    "size: [48, 48, 48]\nclasses:\n  - {name: a, id: 1, color: '#fff', keep: true}\n",
    "size: 48\nclasses:\n  - {name: a, id: 1, color: '#fff', keep: true}\n  - {name: a, id: 1, color: '#fff', keep: true}\n",
    "size: 48\nclasses:\n  - &a {name: a, id: 1, color: '#fff', keep: true}\n  - *b\n",
    "{{{{",
    "\t\tsize: 48",
    "size: 48\n1: 2\nclasses:\n  - {name: a, id: 1, color: '#fff', keep: true}\n",
    "paint: 3\nsize: 48\nclasses:\n  - {name: a, id: 1, color: '#fff', keep: true}\n",
    "paint: {soft_boundary: .nan}\nsize: 48\nclasses:\n  - {name: a, id: 1, color: '#fff', keep: true}\n",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_cli_path_raises_only_config_errors(workdir: Path, gen: DigipathGenerator, text: str) -> None:
    path = write(workdir, text)
    with pytest.raises(ConfigError) as e:
        cli_path(path, gen)
    assert e.value.file is not None and str(e.value).startswith(e.value.file)


def test_recipe_constructed_in_python_validates_too() -> None:
    ok = Recipe.model_validate({"size": 32, "classes": [{"name": "a", "id": 0, "color": "#000", "keep": True}]})
    assert ok.size == (32, 32)
    with pytest.raises(ConfigError, match="duplicate class id"):
        Recipe.model_validate({"size": 32, "classes": [{"name": "a", "id": 0, "color": "#000", "keep": True},
                                                       {"name": "b", "id": 0, "color": "#111", "keep": True}]})


def test_loading_a_recipe_does_not_import_torch(workdir: Path) -> None:
    """Parsing and checking a recipe (schema, classes, layout) stays light: torch loads with the model.
    (An ``augment:`` list does import it: albumentations 2 imports torch for its ToTensorV2.)"""
    path = write(workdir, {k: v for k, v in base_recipe().items() if k != "augment"})
    code = f"import sys; from datagen.recipe import load_recipe; load_recipe({str(path)!r}); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

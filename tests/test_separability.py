"""Class separability (issue 9 part 3): the measurement, the decision rule, the recipe warning and the CLI."""

import json
import sys
import warnings

import pytest
import torch
from conftest import make_tiny_assets, tiny_recipe_text

from datagen.cli import main
from datagen.generate import prepare
from datagen.recipe import load_recipe
from datagen.vectors import VectorLibrary
from datagen.vectors.separability import (
    ClassSeparabilityWarning,
    SeparabilityReport,
    check_recipe_separability,
    clear_cache,
    confusion_from_predictions,
    inseparable_pairs,
    measure_separability,
    pick_evenly,
)

SIZE = 64


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("sep")
    return d, make_tiny_assets(d, size=SIZE)


def _recipe(d, name, tumor, stroma):
    """The tiny test recipe with other vector lists for tumor and stroma."""
    text = tiny_recipe_text(d, SIZE).replace("vectors: [0, 1, 2]", f"vectors: {tumor}") \
        .replace("vectors: [{id: 5, weight: 2}, 6]", f"vectors: {stroma}")
    p = d / name
    p.write_text(text)
    return p


def test_decision_rule_on_a_hand_made_confusion_matrix():
    names = ["a", "b", "c"]
    conf = [[0.9, 0.1, 0.0],
            [0.15, 0.85, 0.0],
            [0.0, 0.05, 0.95]]
    pairs = inseparable_pairs(names, conf, threshold=0.2)
    assert [(p.a, p.b) for p in pairs] == [("a", "b")]          # 0.1 + 0.15 >= 0.2
    assert pairs[0].a_as_b == 0.1 and pairs[0].b_as_a == 0.15
    assert "15% of 'b' renders look like 'a'" in pairs[0].describe()
    assert inseparable_pairs(names, conf, threshold=0.3) == []
    # a shared vector makes a pair inseparable whatever the renders look like
    shared = inseparable_pairs(names, conf, threshold=0.3, shared={(0, 2): [7]})
    assert [(p.a, p.b, p.shared) for p in shared] == [("a", "c", [7])]
    assert "share vector 7" in shared[0].describe()


def test_confusion_rows_are_normalised():
    counts, conf = confusion_from_predictions([0, 0, 0, 1, 1, 2], [0, 1, 1, 1, 1, 0], 4)
    assert counts == [[1, 2, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    for row in conf[:3]:
        assert sum(row) == pytest.approx(1.0)
    assert conf[3] == [0, 0, 0, 0]  # a class without renders stays empty
    assert pick_evenly(18, 8) == [0, 2, 5, 7, 10, 12, 15, 17] and pick_evenly(3, 8) == [0, 1, 2]


def test_shared_vectors_are_inseparable_distinct_ones_are_not(tiny_generator):
    torch.manual_seed(0)
    c = tiny_generator.layer("dec.x4").channels
    base = torch.randn(2, c)
    a = 4 * base[0] + 0.05 * torch.randn(4, c)    # two families of vectors far apart ...
    b = -4 * base[0] + 0.05 * torch.randn(4, c)
    rep = measure_separability(tiny_generator, "dec.x4", {"a": a, "b": b}, size=SIZE, seeds=2)
    assert rep.ok and rep.accuracy == {"a": 1.0, "b": 1.0}
    for row in rep.confusion:
        assert sum(row) == pytest.approx(1.0)
    assert rep.counts == [[8, 0], [0, 8]]                # 4 vectors x 2 seeds per class
    assert rep.centroid_similarity[0][0] == pytest.approx(1.0)
    assert "every pair separable" in rep.format()

    # ... and two classes painting the same vectors (identical tensors, different ids)
    shared = measure_separability(tiny_generator, "dec.x4", {"a": a, "b": a.clone(), "c": b},
                                  ids={"a": [0, 1, 2, 3], "b": [10, 11, 12, 13], "c": [4, 5, 6, 7]}, size=SIZE, seeds=2)
    assert [(p.a, p.b) for p in shared.pairs] == [("a", "b")]
    assert shared.pairs[0].shared == [-1] and shared.pairs[0].confusion >= 0.2
    assert "'a' ~ 'b'" in shared.format()
    d = shared.to_dict()
    assert json.loads(json.dumps(d))["pairs"][0]["a"] == "a"
    assert SeparabilityReport.from_dict(d).pairs[0].b == "b"
    # the cap picks vectors evenly and reports their ids
    capped = measure_separability(tiny_generator, "dec.x4", {"a": a, "c": b}, ids={"a": [0, 1, 2, 3], "c": [4, 5, 6, 7]},
                                  size=SIZE, seeds=1, max_vectors=2)
    assert capped.vectors == {"a": [0, 3], "c": [4, 7]} and capped.num_vectors == {"a": 4, "c": 4}


def test_recipe_warning_names_both_classes(assets, monkeypatch):
    d, _ = assets
    monkeypatch.delenv("DATAGEN_SEPARABILITY", raising=False)
    clear_cache()
    bad = _recipe(d, "shared.yaml", "[0, 1, 2]", "[2, 3]")   # vector 2 in both classes
    with pytest.warns(ClassSeparabilityWarning) as rec:
        job = prepare(bad, num=2, seed=0)
    msgs = [str(w.message) for w in rec if issubclass(w.category, ClassSeparabilityWarning)]
    assert len(msgs) == 1
    assert "'tumor' and 'stroma'" in msgs[0] and "shared.yaml" in msgs[0] and "share vector 2" in msgs[0]
    assert "datagen vectors separability" in msgs[0] and "docs/vectors.md#separability" in msgs[0]
    assert job.renderer is not None

    # cached per process: a second prepare() measures nothing but warns again
    import datagen.vectors.separability.check as sep

    calls = []
    monkeypatch.setattr(sep, "measure_separability", lambda *a, **k: calls.append(1))
    with pytest.warns(ClassSeparabilityWarning):
        prepare(bad, num=2, seed=0)
    assert calls == []

    # opt-outs: the keyword and the environment variable
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClassSeparabilityWarning)
        prepare(bad, num=2, seed=0, check_separability=False)
        monkeypatch.setenv("DATAGEN_SEPARABILITY", "0")
        recipe = load_recipe(bad)
        assert check_recipe_separability(recipe, job.generator, recipe.load_library()) is None
        prepare(bad, num=2, seed=0)


def test_keep_classes_are_skipped_and_one_class_is_not_measured(assets):
    d, recipe_path = assets
    recipe = load_recipe(recipe_path)
    lib = recipe.load_library()
    only = _recipe(d, "one.yaml", "[0]", "[0]")
    text = only.read_text().replace("  - {name: stroma, id: 2, color: \"#1f77b4\", vectors: [0]}\n", "") \
        .replace("tumor: 2, stroma: 2", "tumor: 2")
    only.write_text(text)
    r1 = load_recipe(only)
    assert [c.name for c in r1.classes] == ["background", "tumor"]
    from datagen.models import load_checkpoint

    gen = load_checkpoint(d / "model")
    assert check_recipe_separability(r1, gen, lib) is None  # background is keep: nothing to compare


def test_cli_separability_and_report(assets, capsys):
    d, _ = assets
    lib_dir = d / "library"
    lib = VectorLibrary.load(lib_dir)
    lib.set_label(lib.ids[:4], "tumor")
    lib.set_label(lib.ids[4:8], "stroma")
    lib.save(lib_dir)
    common = ["--device", "cpu", "--size", str(SIZE), "--quiet"]
    assert main(["vectors", "separability", str(lib_dir), "--seeds", "1", *common]) == 0
    out = capsys.readouterr().out
    assert "tumor" in out and "stroma" in out and "separability.json" in out
    saved = json.loads((lib_dir / "separability.json").read_text())
    rep = saved["sections"]["labels"]
    assert rep["classes"] == ["stroma", "tumor"]
    for row in rep["confusion"]:
        assert sum(row) == pytest.approx(1.0)

    recipe = _recipe(d, "cli.yaml", "[0, 1, 2]", "[2, 3]")
    assert main(["vectors", "separability", str(lib_dir), "--recipe", str(recipe), "--seeds", "1", "--strict",
                 "--json", str(d / "sep.json"), *common]) == 1   # shared vector 2
    assert json.loads((d / "sep.json").read_text())["pairs"][0]["shared"] == [2]
    assert "recipe cli.yaml" in json.loads((lib_dir / "separability.json").read_text())["sections"]

    assert main(["vectors", "show", str(lib_dir), "--out", str(d / "show"), "--ids", "0", "1", "--seeds", "1", *common]) == 0
    html = (d / "show" / "report.html").read_text()
    assert "Class separability" in html and "true \\ predicted" in html


def test_cli_shows_the_warning_as_one_line(assets, capsys, monkeypatch, tmp_path):
    d, _ = assets
    monkeypatch.delenv("DATAGEN_SEPARABILITY", raising=False)
    clear_cache()
    recipe = _recipe(d, "cli-warn.yaml", "[0, 1]", "[1, 2]")
    with warnings.catch_warnings():  # print as Python does outside pytest's recorder, with the CLI's format
        warnings.simplefilter("always", ClassSeparabilityWarning)
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(warnings.formatwarning(m, c, f, n, line))
        assert main(["preview", str(recipe), "--out", str(tmp_path / "p.png"), "--num", "1", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "cannot be told apart" in x]
    assert len(line) == 1 and line[0].startswith("datagen preview: warning: classes 'tumor' and 'stroma'")

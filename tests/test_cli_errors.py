"""`datagen generate` on bad input: one clear line on stderr, a non-zero exit, nothing written.

Every recipe mistake must name the recipe file, the field (``classes[1].color``) and
what was expected; option mistakes name the option. A failed start must leave no
output folder (or only an empty one) that a later run or reader could take for data.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe_text
import torch

from datagen.cli import main
from datagen.models import DigipathUNet, UNetConfig, builtin_models, load_checkpoint, save_generator
from datagen.vectors import extract_vectors

SIZE = 64
REPO = Path(__file__).resolve().parents[1]


def _tiny_unet(channels=(8, 16, 16, 16), seed=0):
    torch.manual_seed(seed)
    return DigipathUNet(UNetConfig(channels=channels, noise_channels=4, cond_dim=6, cond_channels=4, default_layer="dec.x4"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random checkpoint, its dec.x4 library, and two libraries that do not fit a dec.x4 recipe."""
    d = tmp_path_factory.mktemp("cli_errors")
    model = d / "model"
    save_generator(model, _tiny_unet(), torch.randn(10, 6), {"name": "tiny"})
    gen = load_checkpoint(model)
    kw = dict(size=SIZE, seed=0, per_image=4, progress=False, model_spec=str(model))
    extract_vectors(gen, "dec.x4", 4, **kw).save(d / "library")  # 16 vectors, 16 channels
    extract_vectors(gen, "dec.x2", 2, **kw).save(d / "library_x2")  # another layer
    # same layer name and same recorded model, but 12 channels (as if extracted from a wider/narrower variant)
    other = d / "model12"
    save_generator(other, _tiny_unet(channels=(8, 16, 12, 16), seed=1), torch.randn(10, 6))
    extract_vectors(load_checkpoint(other), "dec.x4", 2, **kw).save(d / "library_c12")
    return d


def _recipe_text(d: Path) -> str:
    return tiny_recipe_text(d, SIZE)


def _variant(tmp_path: Path, assets: Path, old: str | None, new: str, name: str = "recipe.yaml") -> Path:
    """The good recipe with ``old`` replaced by ``new``, written next to the assets' libraries."""
    text = _recipe_text(assets)
    if old is not None:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    # keep the relative library path working: the recipe lives in the assets folder, uniquely named
    p = assets / f"{tmp_path.name}-{name}"
    p.write_text(text)
    return p


def _assert_nothing_written(out: Path) -> None:
    """No output, or at most an empty folder: nothing a reader or --resume could take for a dataset."""
    if not out.exists():
        return
    assert out.is_dir(), f"{out} was created as a file"
    left = sorted(p.name for p in out.iterdir())
    assert left == [], f"a failed start left {left} in {out}"


def _generate(capsys, recipe, out, *extra):
    args = ["generate", str(recipe), "--out", str(out), "--num", "4", "--block-size", "2", "--quiet", *extra]
    try:
        rc = main(args)
    except SystemExit as e:  # argparse rejects bad options this way
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_good_recipe_works(assets, tmp_path, capsys):
    """The baseline the error cases are variations of really generates (so each failure is the mistake's)."""
    recipe = _variant(tmp_path, assets, None, "")
    rc, out, err = _generate(capsys, recipe, tmp_path / "out")
    assert rc == 0, err
    assert (tmp_path / "out" / "info.json").is_file()


# (id, old text, new text, field path, substrings of the expectation)
RECIPE_CASES = [
    ("missing-size", f"size: [{SIZE}, {SIZE}]\n", "", "size", ["required", "missing"]),
    ("size-big", f"size: [{SIZE}, {SIZE}]", "size: big", "size", ["expected", "[height, width]", "'big'"]),
    ("color-red", 'color: "#d62728"', "color: red", "classes[1].color", ["expected", "#rrggbb", "'red'"]),
    ("unknown-layout-class", "stroma: 2}", "stroma: 2, necrosis: 1}", "layout.classes.necrosis",
     ["necrosis", "expected one of", "background, stroma, tumor"]),
    ("vector-ids-not-in-library", "vectors: [0, 1, 2]", "vectors: [0, 1, 99]", "classes[1].vectors[2]",
     ["99", "not in the library", "0..15"]),
    ("library-of-another-layer", "library: library", "library: library_x2", "layer",
     ["'dec.x2'", "'dec.x4'", "library_x2"]),
    ("library-channel-mismatch", "library: library", "library: library_c12", "library",
     ["12 channels", "16 channels", "library_c12"]),
    ("duplicate-class-id", "name: stroma, id: 2", "name: stroma, id: 1", "classes[2].id",
     ["duplicate class id 1", "classes[1]", "own id"]),
]


@pytest.mark.parametrize("case", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_malformed_recipe(assets, tmp_path, capsys, case):
    _, old, new, field, expected = case
    recipe = _variant(tmp_path, assets, old, new)
    out = tmp_path / "out"
    rc, stdout, err = _generate(capsys, recipe, out)
    assert rc == 2, (rc, err)
    assert "Traceback" not in err
    assert f"{recipe}: {field}: " in err, err  # file, then field path
    for s in expected:
        assert s in err, (s, err)
    assert err.count("\n") == 1, "one line"
    _assert_nothing_written(out)


def test_yaml_syntax_error_names_line(assets, tmp_path, capsys):
    recipe = _variant(tmp_path, assets, f"size: [{SIZE}, {SIZE}]", f"size: [{SIZE}, {SIZE}\nfoo: : ]")
    out = tmp_path / "out"
    rc, _, err = _generate(capsys, recipe, out)
    assert rc == 2
    assert f"{recipe}: invalid YAML: line 5, column" in err, err
    assert "expected" in err
    _assert_nothing_written(out)


def test_recipe_file_missing(tmp_path, capsys):
    recipe = tmp_path / "no-such-recipe.yaml"
    out = tmp_path / "out"
    rc, _, err = _generate(capsys, recipe, out)
    assert rc == 2
    assert f"{recipe}: " in err and "not found" in err, err
    _assert_nothing_written(out)


def test_out_under_a_regular_file(assets, tmp_path, capsys):
    recipe = _variant(tmp_path, assets, None, "")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "dataset"
    rc, _, err = _generate(capsys, recipe, out)
    assert rc == 2
    assert "--out" in err and str(out) in err and "is a file, not a directory" in err, err
    assert blocker.read_text() == "not a folder"
    # and --out naming the regular file itself
    rc, _, err = _generate(capsys, recipe, blocker)
    assert rc == 2
    assert "--out" in err and str(blocker) in err and "not a directory" in err, err
    assert blocker.read_text() == "not a folder"


def _read_only_dir() -> Path | None:
    """An existing directory that even root cannot create files in (sysfs); None where there is none."""
    for cand in (Path("/sys/kernel"), Path("/sys"), Path("/proc")):
        if not cand.is_dir():
            continue
        probe = cand / ".datagen-test-probe"
        try:
            with open(probe, "wb"):
                pass
        except OSError:
            return cand
        probe.unlink()
    return None


def test_out_in_read_only_location(assets, tmp_path, capsys):
    ro = _read_only_dir()
    if ro is None:
        pytest.skip("no read-only directory (sysfs / procfs) on this system")
    recipe = _variant(tmp_path, assets, None, "")
    out = ro / "datagen-test-out" / "dataset"  # cannot be created
    rc, _, err = _generate(capsys, recipe, out)
    assert rc == 2
    assert "--out" in err and str(out) in err and "cannot create output directory" in err, err
    assert not out.parent.exists()
    # an existing directory that cannot be written into: refused by the write probe, nothing left behind
    before = sorted(os.listdir(ro))
    rc, _, err = _generate(capsys, recipe, ro)
    assert rc == 2
    assert "--out" in err and str(ro) in err and "not writable" in err, err
    assert sorted(os.listdir(ro)) == before


def test_num_zero(assets, tmp_path, capsys):
    recipe = _variant(tmp_path, assets, None, "")
    out = tmp_path / "out"
    args = ["generate", str(recipe), "--out", str(out), "--num", "0", "--quiet"]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert "--num" in err and "at least 1" in err and "got 0" in err, err
    _assert_nothing_written(out)


OPTION_CASES = [
    ("block-size-0", ["--block-size", "0"], ["--block-size", "at least 1", "got 0"]),
    ("batch-size-0", ["--batch-size", "0"], ["--batch-size", "at least 1", "got 0"]),
    ("shard-index-out-of-range", ["--shard-index", "3", "--num-shards", "2"], ["--shard-index", "0..1", "got 3"]),
    ("negative-seed", ["--seed", "-1"], ["--seed", "non-negative", "got -1"]),
]


@pytest.mark.parametrize("case", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_option_values(assets, tmp_path, capsys, case):
    _, extra, expected = case
    recipe = _variant(tmp_path, assets, None, "")
    out = tmp_path / "out"
    rc, _, err = _generate(capsys, recipe, out, *extra)
    assert rc == 2, err
    assert "Traceback" not in err
    for s in expected:
        assert s in err, (s, err)
    _assert_nothing_written(out)


def test_unavailable_engine(assets, tmp_path, capsys):
    import importlib.util

    try:
        available = importlib.util.find_spec("datagen.engines.ray") is not None and importlib.util.find_spec("ray") is not None
    except ImportError:
        available = False
    if available:
        pytest.skip("the ray engine is installed here")
    recipe = _variant(tmp_path, assets, None, "")
    out = tmp_path / "out"
    rc, _, err = _generate(capsys, recipe, out, "--engine", "ray")
    assert rc == 2, err
    assert "--engine ray" in err and "--engine local" in err, err
    _assert_nothing_written(out)


def test_unknown_format(assets, tmp_path, capsys):
    recipe = _variant(tmp_path, assets, None, "")
    out = tmp_path / "out"
    rc, _, err = _generate(capsys, recipe, out, "--format", "png")
    assert rc == 2
    assert "--format" in err and "'png'" in err and "zarr" in err and "tiff" in err, err
    assert "Traceback" not in err
    _assert_nothing_written(out)


def test_subprocess_error_has_no_traceback(assets, tmp_path):
    """The real entry point: exit status 2 and one readable line, no traceback."""
    recipe = _variant(tmp_path, assets, 'color: "#d62728"', "color: red")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "datagen.cli", "generate", str(recipe), "--out", str(out),
                           "--num", "4", "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("datagen generate: error: ")
    assert f"{recipe}: classes[1].color: expected" in lines[0]
    assert proc.stdout == ""
    _assert_nothing_written(out)


# ---- validate and models -----------------------------------------------------------

def test_validate_non_dataset(tmp_path, capsys):
    folder = tmp_path / "not-a-dataset"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    rc = main(["validate", str(folder), "--quiet"])
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert rc != 0
    assert "Traceback" not in text
    assert str(folder) in text and "not a datagen dataset" in text and "info.json" in text, text
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # validate only reads

    rc = main(["validate", str(tmp_path / "missing"), "--quiet"])
    text = "".join(capsys.readouterr())
    assert rc != 0 and "not a directory" in text, text


def test_models_lists_builtin_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    names = builtin_models()
    if not names:
        assert "no built-in models" in out
    for name in names:
        assert f"builtin:{name}" in out


def test_models_lists_checkpoint_layers(assets, capsys):
    model = assets / "model"
    assert main(["models", str(model)]) == 0
    out = capsys.readouterr().out
    assert str(model) in out and "default layer dec.x4" in out and "multiples of 8 px" in out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line.startswith("  ") and line.split()[0][:3] in ("enc", "mid", "dec", "to_")}
    assert rows["dec.x4"] == ["16", "4"] and rows["enc.x1"] == ["8", "1"] and rows["to_rgb"] == ["3", "1"]
    assert list(rows)[0] == "enc.x1" and list(rows)[-1] == "to_rgb"

    import json

    assert main(["models", str(model), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["default_layer"] == "dec.x4"
    assert {l["name"] for l in data[0]["layers"]} >= {"enc.x1", "mid", "dec.x4", "to_rgb"}


def test_models_bad_path(tmp_path, capsys):
    rc = main(["models", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(tmp_path / "nope") in err and "checkpoint" in err, err


@pytest.mark.parametrize("module, command, argv, hint", [
    ("generate", "cmd_generate", ["generate", "r.yaml", "--out", "o", "--num", "1"], "completed blocks are kept"),
    ("train", "cmd_train", ["train", "--out", "run"], "a checkpoint was saved"),
    ("generate", "cmd_validate", ["validate", "o"], None),
])
def test_ctrl_c_says_what_was_kept(monkeypatch, capsys, module, command, argv, hint):
    import importlib

    import datagen.cli.app as cli

    def interrupted(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(f"datagen.cli.{module}"), command, interrupted)
    assert cli.main(argv) == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    if hint:
        assert hint in err and "--resume" in err
    else:
        assert "--resume" not in err


@pytest.mark.parametrize("argv, expect", [
    (["vectors", "extract", "--out", "x", "--per-image", "0"], "--per-image: expected a number of pixels >= 1 or 'all', got '0'"),
    (["vectors", "extract", "--out", "x", "--dedupe", "2"], "--dedupe: expected a cosine similarity in (0, 1] or 'off', got '2'"),
    (["export", "geojson", "x", "--strip-rows", "many"], "--strip-rows: expected a number of rows >= 1, got 'many'"),
    (["generate", "r.yaml", "--out", "x", "--num", "1", "--workers", "-2"], "--workers: expected a number of processes >= 1 or 'auto', got '-2'"),
])
def test_positive_options_say_what_they_take(argv, expect, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert expect in capsys.readouterr().err


def test_positive_int_keyword_any_case():
    from datagen.cli.app import positive_int

    workers = positive_int("a number of processes", keyword="auto")
    assert workers("AUTO") == "auto" and workers(" 3 ") == 3
    assert positive_int("a number of pixels", keyword="all")("All") == "all"

"""Issue 15, parts 3, 4, 5 and 8: bounded input, nothing half-created, no tracebacks for user
errors, and no code execution from model or run-state files without an opt-in.

Every case goes through ``datagen.cli.main``: exit status 2, one line on stderr naming the
file/field or option, and no output folder left behind.
"""

import errno
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_assets

import datagen.generate as generate_mod
from datagen.cli import main
from datagen.config import excerpt, load_yaml
from datagen.errors import ConfigError, DatagenError


@pytest.fixture(autouse=True)
def _no_separability_check(monkeypatch):
    monkeypatch.setenv("DATAGEN_SEPARABILITY", "0")  # measured elsewhere; here it only costs time


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("bounds")
    return d, make_tiny_assets(d)


def _recipe(assets, tmp_path, text=None, *, old=None, new=None, extra=""):
    """The tiny recipe (optionally edited), written next to the assets so ``library: library`` resolves."""
    d, base = assets
    text = base.read_text() if text is None else text
    if old is not None:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    p = d / f"{tmp_path.name}.yaml"
    p.write_text(text + extra)
    return p


def _run(capsys, recipe, out, *extra, command="generate", num="4"):
    args = [command, str(recipe), "--out", str(out), "--num", num, *extra]
    if command == "generate":
        args += ["--block-size", "2", "--quiet"]
    try:
        rc = main(args)
    except SystemExit as e:
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _refused(rc, err, out, *expected):
    assert rc == 2, (rc, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1, f"one line: {err!r}"
    for s in expected:
        assert s in err, (s, err)
    assert not Path(out).exists() or not any(Path(out).iterdir()), f"a failed start left {list(Path(out).iterdir())}"


# ---- part 3: bounded input ---------------------------------------------------------------------

def _bomb(levels=9, width=9):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nsize: *a{levels}\n"


def test_billion_laughs_is_refused_fast(assets, tmp_path, capsys):
    recipe = _recipe(assets, tmp_path, _bomb())
    t0 = time.perf_counter()
    rc, _, err = _run(capsys, recipe, tmp_path / "out")
    assert time.perf_counter() - t0 < 5
    _refused(rc, err, tmp_path / "out", str(recipe), "expands to more than", "aliases")


def test_oversize_and_deep_yaml(assets, tmp_path, capsys):
    d, base = assets
    big = _recipe(assets, tmp_path, base.read_text() + "# " + "x" * (1 << 20) + "\n")
    rc, _, err = _run(capsys, big, tmp_path / "out")
    _refused(rc, err, tmp_path / "out", str(big), "too large", "at most 1,048,576 bytes")

    for depth in (100, 5000):  # our limit, and libyaml's own
        deep = tmp_path / f"deep{depth}.yaml"
        deep.write_text("size: " + "[" * depth + "]" * depth + "\n")
        with pytest.raises(ConfigError, match="nest") as e:
            load_yaml(deep)
        assert str(deep) in str(e.value)


def test_alias_use_within_bounds_still_loads(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("base: &b {x: 1, y: [1, 2, 3]}\nmore: [*b, *b, *b]\n")
    assert load_yaml(p)["more"][2]["y"] == [1, 2, 3]
    p.write_text(_bomb(levels=3, width=9))  # 9**4 values: over a lowered limit only
    assert len(load_yaml(p)["size"]) == 9
    with pytest.raises(ConfigError, match="expands to more than 1,000"):
        load_yaml(p, max_nodes=1000)


def test_quoted_values_are_cut_to_an_excerpt(assets, tmp_path, capsys):
    recipe = _recipe(assets, tmp_path, old="size: [64, 64]", new="size: " + "y" * 5000)
    rc, _, err = _run(capsys, recipe, tmp_path / "out")
    _refused(rc, err, tmp_path / "out", "size: expected [height, width]", "...")
    assert len(err) < 400, err
    assert len(excerpt(list(range(10**5)))) <= 80
    assert len(excerpt("z" * 10**6)) <= 80 and excerpt("short") == "'short'"


# ---- part 4: nothing half-created ------------------------------------------------------------

@pytest.mark.parametrize("aug, expected", [
    ("[{name: RandomCrop, height: 32, width: 32}]", ["augment", "changed the sample size", "(64, 64) -> (32, 32)"]),
    ("[{name: Resize, height: 128, width: 128, p: 0.1}]", ["augment", "changed the sample size"]),
    ("[{name: Rotate, limit: 30, fill_mask: 7, p: 0.5}]", ["augment", "mask values 7", "not class ids"]),
], ids=["random-crop", "resize-rarely", "fill-mask-outside-classes"])
def test_bad_augmentation_creates_nothing(assets, tmp_path, capsys, aug, expected):
    recipe = _recipe(assets, tmp_path, extra=f"augment: {aug}\n")
    out = tmp_path / "out"
    rc, _, err = _run(capsys, recipe, out)
    _refused(rc, err, out, str(recipe), *expected)
    assert not out.exists()


def test_size_preserving_augmentation_passes_the_dry_run(assets, tmp_path, capsys):
    recipe = _recipe(assets, tmp_path, extra="augment: [{name: HorizontalFlip, p: 0.5}, {name: RandomRotate90, p: 0.5}]\n")
    rc, _, err = _run(capsys, recipe, tmp_path / "out")
    assert rc == 0, err


@pytest.mark.parametrize("kind", ["not-a-png", "wrong-ids"])
def test_bad_user_mask_file_creates_nothing(assets, tmp_path, capsys, kind):
    from PIL import Image

    d, _ = assets
    masks = d / f"masks-{tmp_path.name}"
    masks.mkdir()
    good = np.zeros((64, 64), np.uint8)
    good[:, 32:] = 1
    Image.fromarray(good).save(masks / "a.png")
    if kind == "not-a-png":
        (masks / "b.png").write_text("not an image")
    else:
        bad = good.copy()
        bad[:8] = 9
        Image.fromarray(bad).save(masks / "b.png")
    layout = f"layout:\n  kind: mask\n  path: {masks.name}/*.png\n"
    text = _recipe(assets, tmp_path).read_text()
    text = text[:text.index("layout:")] + layout
    recipe = _recipe(assets, tmp_path, text)
    out = tmp_path / "out"
    rc, _, err = _run(capsys, recipe, out)
    _refused(rc, err, out, "b.png", "layout.path",
             *(["cannot read mask image"] if kind == "not-a-png" else ["not class ids", "9 (512 px)"]))
    assert not out.exists()


# ---- part 5: no tracebacks for user errors ----------------------------------------------------

def test_size_too_small_for_the_model(assets, tmp_path, capsys):
    recipe = _recipe(assets, tmp_path, old="size: [64, 64]", new="size: [8, 8]")
    rc, _, err = _run(capsys, recipe, tmp_path / "out")
    _refused(rc, err, tmp_path / "out", f"{recipe}: size: ", "too small", "at least 16 px")


def test_builtin_model_min_size():
    from datagen.models import load_generator

    gen = load_generator("builtin:tissue-small", "cpu")
    assert gen.min_size == 64  # stride 32, reflect padding needs 2 px at the bottleneck
    with pytest.raises(ValueError, match="too small"):
        gen.check_size((32, 32))


def test_size_too_large_for_memory(assets, tmp_path, capsys):
    recipe = _recipe(assets, tmp_path, old="size: [64, 64]", new="size: [100000, 100000]")
    t0 = time.perf_counter()
    rc, _, err = _run(capsys, recipe, tmp_path / "out")
    assert time.perf_counter() - t0 < 10
    _refused(rc, err, tmp_path / "out", f"{recipe}: size: ", "GiB of memory", "more than")


def test_stylegan2_model_errors_name_the_field(assets, tmp_path, capsys):
    d, base = assets
    model_line = f"model: {d / 'model'}"
    (d / "not-a-pickle.pkl").write_text("hello")
    with open(d / "some.pkl", "wb") as f:
        pickle.dump({"x": 1}, f)
    cases = [
        ("stylegan2:missing.pkl", "", ["model: ", "missing.pkl", "not found"]),
        ("stylegan2:not-a-pickle.pkl", "", ["model: ", "not a StyleGAN2-ADA pickle"]),
        ("stylegan2:some.pkl", "", ["model: ", "runs any code", "--trust-pickles", "trust: true"]),
        ("stylegan2:some.pkl", "trust: true\n", ["model: ", "no StyleGAN2 generator"]),  # opted in: unpickled
    ]
    for k, (spec, extra, expected) in enumerate(cases):
        recipe = _recipe(assets, tmp_path, old=model_line, new=f"model: {spec}", extra=extra)
        out = tmp_path / f"out{k}"
        rc, _, err = _run(capsys, recipe, out)
        _refused(rc, err, out, str(recipe), *expected)
    # the flag opts in as well
    recipe = _recipe(assets, tmp_path, old=model_line, new="model: stylegan2:some.pkl")
    rc, _, err = _run(capsys, recipe, tmp_path / "outf", "--trust-pickles")
    _refused(rc, err, tmp_path / "outf", "no StyleGAN2 generator")


def test_pickle_is_not_executed_without_opt_in(tmp_path):
    from datagen.models import load_generator

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(Evil(), f)
    from datagen.models import CheckpointError

    with pytest.raises(CheckpointError, match="trust_pickles=True"):  # the API names the parameter
        load_generator(f"stylegan2:{tmp_path / 'evil.pkl'}", "cpu")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["generate", "preview"])
def test_bad_device(assets, tmp_path, capsys, command):
    out = tmp_path / ("out" if command == "generate" else "p.png")
    rc, _, err = _run(capsys, assets[1], out, "--device", "bogus", command=command)
    _refused(rc, err, out, "--device", "'bogus'", "cpu", "cuda", "auto")


def test_huge_num(assets, tmp_path, capsys):
    for num in ("1e12", str(10**12)):
        rc, _, err = _run(capsys, assets[1], tmp_path / "out", num=num)
        _refused(rc, err, tmp_path / "out", "--num", "at most 1,000,000,000")
    with pytest.raises(SystemExit):
        main(["generate", str(assets[1]), "--out", str(tmp_path / "out"), "--num", "1.5"])
    assert "whole number" in capsys.readouterr().err


def test_num_beyond_free_disk(assets, tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    rc, _, err = _run(capsys, assets[1], tmp_path / "out", num="100")
    _refused(rc, err, tmp_path / "out", "--num", "on disk", "free", "100 samples")


def test_disk_full_mid_run_says_what_was_kept(assets, tmp_path, capsys, monkeypatch):
    real_open = generate_mod.open_writer

    def full_after_first_block(*args, **kwargs):
        w = real_open(*args, **kwargs)
        real_write = w.write_block

        def write_block(b, images, masks):
            if b >= 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(b, images, masks)

        w.write_block = write_block
        return w

    out = tmp_path / "out"
    monkeypatch.setattr(generate_mod, "open_writer", full_after_first_block)
    rc, _, err = _run(capsys, assets[1], out)
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "disk full" in err and "1 of 2 blocks are complete and kept" in err and "--resume" in err, err
    monkeypatch.setattr(generate_mod, "open_writer", real_open)
    rc = main(["generate", str(assets[1]), "--out", str(out), "--num", "4", "--block-size", "2", "--resume"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "1 of 2 blocks were already complete" in stdout  # the summary (--quiet would leave it out)


def test_cli_reports_stray_enospc_in_one_line(monkeypatch, capsys):
    import datagen.cli.app as cli
    import datagen.cli.generate as generate_cli

    def full(a):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x")

    monkeypatch.setattr(generate_cli, "cmd_generate", full)
    assert cli.main(["generate", "r.yaml", "--out", "o", "--num", "1"]) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "--resume" in err and err.count("\n") == 1, err


# ---- part 8: run state without pickled code ------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_committed_run_state_loads_weights_only():
    from datagen.train.loop import load_state

    st = load_state(REPO / "training/tissue-small/resume/train_state.pt")
    assert st["step"] > 0 and {"G", "G_ema", "D", "sampler", "aug_gen", "noise_gen"} <= set(st)
    g = torch.Generator()
    g.set_state(st["aug_gen"])  # RNG states are tensors
    np.random.default_rng().bit_generator.state = st["sampler"]  # a plain dict


def test_run_state_with_objects_is_refused(tmp_path):
    from datagen.train.loop import load_state

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"G": {}, "step": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DatagenError, match="weights_only=True"):
        load_state(tmp_path / "evil.pt")
    assert not marker.exists()
    # what training writes (state dicts, Adam state, RNG states, numbers) loads
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    state = {"G": net.state_dict(), "step": 3, "nimg": 12, "wall_s": 1.5, "opt_g": opt.state_dict(),
             "sampler": np.random.default_rng(0).bit_generator.state, "aug_gen": torch.Generator().get_state()}
    torch.save(state, tmp_path / "ok.pt")
    assert load_state(tmp_path / "ok.pt")["step"] == 3

"""The ``datagen`` command line itself: a light parser, complete help, errors that speak in flags
(where the library speaks in parameter names), tracebacks for bugs only, --quiet, a closed pipe,
and what ``validate`` says about a sharded run that is not finished."""

import argparse
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_assets

import datagen.cli.generate as generate_cli
from datagen.cli import build_parser, main
from datagen.cli.app import flag_namer
from datagen.errors import ConfigError, DatagenError, UsageError, arg

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.fixture(autouse=True)
def _no_separability_check(monkeypatch):
    monkeypatch.setenv("DATAGEN_SEPARABILITY", "0")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return d, make_tiny_assets(d)


def _python(code, **kw):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120, **kw)


def _subparsers(parser):
    """(prog, parser) of every parser below ``parser``, depth first."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                out.append((sub.prog, sub))
                out += _subparsers(sub)
    return out


# ---- the parser: light, complete help -----------------------------------------------------

def test_parser_and_every_help_import_nothing_heavy():
    """Building the parser and printing every command's help loads neither torch nor zarr nor scipy."""
    proc = _python(
        "import argparse, sys\n"
        "from datagen.cli import build_parser\n"
        "def walk(p):\n"
        "    p.format_help()\n"
        "    for a in p._actions:\n"
        "        if isinstance(a, argparse._SubParsersAction):\n"
        "            for s in a.choices.values(): walk(s)\n"
        "walk(build_parser())\n"
        "print(sorted(m for m in ('torch', 'zarr', 'scipy', 'numpy', 'tifffile', 'PIL') if m in sys.modules))\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_help_runs_without_heavy_imports():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "datagen.cli", "--help"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0 and "generate" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "zarr", "scipy"}, sorted(imported & {"torch", "zarr", "scipy"})


def test_every_option_has_help_and_shows_its_default():
    subs = _subparsers(build_parser())
    assert {"datagen generate", "datagen vectors extract", "datagen canvas", "datagen qc", "datagen train"} <= {
        prog for prog, _ in subs}
    for prog, p in subs:
        if any(isinstance(a, argparse._SubParsersAction) for a in p._actions):
            continue  # a group (datagen vectors): its actions have their own parsers
        p.format_help()  # formats (a stray % in a help string would fail here)
        for a in p._actions:
            name = "/".join(a.option_strings) or a.dest
            assert a.help and a.help.strip(), f"{prog} {name}: no help"
            shown = p.formatter_class(prog)._get_help_string(a)
            has_default = a.nargs != 0 and not any(a.default is v for v in (None, False, argparse.SUPPRESS))
            if has_default:
                assert "default" in shown, f"{prog} {name}: the default {a.default!r} is not shown"


def test_train_help_shows_train_configs_defaults():
    from datagen.cli.train import TRAIN_DEFAULTS
    from datagen.train import TrainConfig

    assert TRAIN_DEFAULTS == {k: TrainConfig.model_fields[k].default for k in TRAIN_DEFAULTS}


def test_defaults_in_help_text():
    text = {prog: p.format_help() for prog, p in _subparsers(build_parser())}
    assert "(default: 16)" in text["datagen generate"] and "(default: zarr)" in text["datagen generate"]
    assert "(default: 1024)" in text["datagen canvas"] and "(default: zlib)" in text["datagen canvas"]
    assert "training crop" in text["datagen vectors extract"]


# ---- errors: user errors in one line (flags), bugs with a traceback ------------------------

def test_usage_error_speaks_python_in_the_api_and_flags_in_the_cli():
    e = UsageError(f"must be in 0..1 (with {arg('num_shards', 2)}), got 3", param="shard_index")
    assert isinstance(e, ValueError) and isinstance(e, DatagenError)
    assert str(e) == "shard_index: must be in 0..1 (with num_shards=2), got 3"
    generate = dict(_subparsers(build_parser()))["datagen generate"]
    assert e.render(flag_namer(generate)) == "--shard-index: must be in 0..1 (with --num-shards 2), got 3"
    namer = flag_namer(generate)
    assert namer("num_tasks") == "--ray-tasks" and namer("recipe") == "RECIPE" and namer("batch_size") == "--batch-size"
    mixed = UsageError(f"use {arg('device', 'cpu')} or pass {arg('resume', True)}")
    assert str(mixed) == "use device='cpu' or pass resume=True"
    assert mixed.render(namer) == "use --device cpu or pass --resume"
    # the parameter survives pickling (Ray ships worker errors back to the driver)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is UsageError and back.param == "shard_index" and str(back) == str(e)
    c = pickle.loads(pickle.dumps(ConfigError("bad", file="r.yaml", field="size")))
    assert (c.file, c.field, str(c)) == ("r.yaml", "size", "r.yaml: size: bad")


def test_library_errors_name_parameters_not_flags(assets, tmp_path):
    from datagen.generate import generate

    with pytest.raises(UsageError) as e:
        generate(assets[1], tmp_path / "out", num=4, batch_size=0)
    assert e.value.param == "batch_size" and str(e.value) == "batch_size: must be at least 1, got 0"
    assert "--" not in str(e.value)


def test_cli_shows_the_flag_of_a_library_error(monkeypatch, capsys):
    def bad(a):
        raise UsageError("must be at least 1, got 0", param="num_tasks")

    monkeypatch.setattr(generate_cli, "cmd_generate", bad)
    assert main(["generate", "r.yaml", "--out", "o", "--num", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "datagen generate: error: --ray-tasks: must be at least 1, got 0\n", err


def test_a_bug_is_not_a_user_error(monkeypatch):
    """A ValueError/KeyError that is not a DatagenError propagates (traceback, exit 1), it is not
    turned into a one-line exit 2."""
    for exc in (ValueError("internal"), KeyError("k"), FileNotFoundError(2, "no", "x")):
        def bug(a, exc=exc):
            raise exc

        monkeypatch.setattr(generate_cli, "cmd_validate", bug)
        with pytest.raises(type(exc)):
            main(["validate", "x"])


def test_a_bug_shows_its_traceback_and_exits_1():
    proc = _python("import sys, datagen.cli.generate as g\n"
                   "g.cmd_validate = lambda a: 1 / 0\n"
                   "from datagen.cli import main\n"
                   "sys.exit(main(['validate', 'x']))\n")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr


def test_closed_pipe_is_quiet():
    """``datagen models --json | head -1``: no BrokenPipeError traceback."""
    code = ("import sys, datagen.cli.models as m\n"
            "def many(a):\n"
            "    for i in range(200000):\n"
            "        print('x' * 80)\n"
            "    return 0\n"
            "m.cmd_models = many\n"
            "from datagen.cli import main\n"
            "sys.exit(main(['models', '--json']))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert p.stdout.readline().startswith(b"x")
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ---- --quiet, validate -------------------------------------------------------------------------

def test_quiet_silences_the_report_and_validate_shows_no_empty_bar(assets, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["generate", str(assets[1]), "--out", str(out), "--num", "4", "--block-size", "2", "--quiet"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    assert main(["validate", str(out), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == ""
    assert main(["validate", str(out), "--quick"]) == 0  # nothing is checked per block: no bar at all
    cap = capsys.readouterr()
    assert "result: OK" in cap.out and "validate:" not in cap.err and "block" not in cap.err, cap.err
    missing = tmp_path / "nope"
    assert main(["validate", str(missing)]) == 1
    cap = capsys.readouterr()
    assert "not a directory" in cap.out and cap.err == "", cap.err
    assert main(["preview", str(assets[1]), "--out", str(tmp_path / "p.png"), "--num", "1", "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_validate_says_which_shards_are_left(assets, tmp_path, capsys):
    out = tmp_path / "sharded"
    args = ["generate", str(assets[1]), "--out", str(out), "--num", "12", "--block-size", "2", "--num-shards", "3", "--quiet"]
    assert main([*args, "--shard-index", "1"]) == 0
    assert main(["validate", str(out)]) == 1
    text = capsys.readouterr().out
    assert "incomplete: 4 of 6 blocks" in text, text
    assert "shard(s) 0, 2 of 3 have blocks left" in text, text
    assert "--shard-index K --num-shards 3 --resume for K = 0, 2" in text, text
    from datagen.validate import validate_dataset  # the API speaks Python

    (err,) = validate_dataset(out, check_data=False).errors
    assert "shard_index=K num_shards=3 resume=True for K = 0, 2" in err and "--" not in err, err
    # once those run, the dataset is complete
    assert main([*args, "--shard-index", "0"]) == 0 and main([*args, "--shard-index", "2"]) == 0
    assert main(["validate", str(out), "--quiet"]) == 0


# ---- vectors: a working default size; train: a resume with nothing to do ---------------------------

def test_vectors_extract_and_show_default_to_the_models_size(tmp_path, capsys):
    lib = tmp_path / "lib"
    assert main(["vectors", "extract", "--model", "builtin:tissue-small", "--num-images", "1", "--per-image", "2",
                 "--out", str(lib), "--device", "cpu", "--quiet"]) == 0
    from datagen.vectors import VectorLibrary

    assert VectorLibrary.load(lib).image_size == (256, 256)  # the built-in model's training crop
    assert main(["vectors", "show", str(lib), "--out", str(tmp_path / "show"), "--ids", "0", "--seeds", "1",
                 "--device", "cpu", "--thumb", "32", "--no-separability", "--quiet"]) == 0
    assert (tmp_path / "show" / "contact_sheet.png").is_file()
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit):
        main(["vectors", "extract", "--model", "builtin:tissue-small", "--per-image", "some", "--out", str(lib)])
    assert "'all'" in capsys.readouterr().err


def test_resume_of_a_finished_run_says_so(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = (rng.random((96, 96, 3)) * 60 + 120).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "t.png")
    run = tmp_path / "run"
    base = ["train", "--out", str(run), "--quiet"]
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"data: [{{path: {tmp_path / 't.png'}}}]\ncrop: 32\nbatch: 2\nsteps: 2\nfeature_extractor: none\n"
                   "checkpoint_every: 1\nsample_every: 100\nlog_every: 1\n"
                   "model: {channels: [8, 16, 16, 16], noise_channels: 4, cond_channels: 4, disc_channels: [8, 16, 16]}\n")
    assert main([*base[:1], str(cfg), *base[1:], "--device", "cpu"]) == 0
    assert main([*base, "--resume"]) == 2  # the run's train.yaml says 2 steps: all done
    err = capsys.readouterr().err
    assert "--steps: the run in" in err and "already at step 2" in err and "more than 2" in err, err
    assert main([*base, "--resume", "--steps", "3"]) == 0

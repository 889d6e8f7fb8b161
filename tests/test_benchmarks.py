"""Smoke test: every benchmark script runs with --quick and prints valid JSON (speed targets are not tested)."""

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def bench_path(monkeypatch, tmp_path_factory):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("DATAGEN_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "bench-cache"))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name, key", [
    ("bench_paint_overhead", "ratio"),
    ("bench_pipeline", "ratio"),
    ("bench_scaling", "results"),
    ("bench_memory", "ratio_large_over_small"),
    ("bench_canvas", "seams"),
    ("bench_precision", "train"),
    ("fidelity", "modes"),
])
def test_benchmark_quick_prints_json(name, key, capsys, tmp_path):
    import importlib

    mod = importlib.import_module(name)
    argv = ["--quick", "--threads", "1", "--json-out", str(tmp_path / "r.json")]
    if name == "bench_memory":
        argv += ["--num", "4"]
    if name == "bench_canvas":
        argv += ["--parts", "seams,speed"]  # its memory part runs children like bench_memory's
    result = mod.main(argv)
    printed = json.loads(capsys.readouterr().out)
    assert printed == result == json.loads((tmp_path / "r.json").read_text())
    assert key in result and result["machine"]["cores"] >= 1 and "torch" in result["machine"]
    if name == "bench_scaling":  # its settings part: the default `datagen generate` command vs another setting
        settings = result["settings"]
        assert [r["setting"] for r in settings["rows"]] == ["default", "--workers 1"]
        assert 0 < settings["ratio_default_over_best"] <= 1 and settings["rows"][0]["images_per_s"] > 0
    sys.modules.pop(name, None)

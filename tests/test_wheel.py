"""Packaging: the shipped data (layout presets, the vector library, the demo recipe) resolves in a
checkout and inside a wheel, and a wheel installed in a fresh virtual environment runs the
README demo from a folder outside the repository (slow: builds, installs torch and the deps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from datagen.errors import ConfigError
from datagen.recipe import load_recipe
from datagen.resources import shipped_dir, shipped_names, shipped_path

ROOT = Path(__file__).resolve().parents[1]
#: What a wheel is built from (the rest of the repository is not needed).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "datagen", "layouts", "vector_libraries", "recipes")
DEMO = "tissue-small-demo"


def test_shipped_data_resolves_to_the_repository_folders():
    assert shipped_dir("presets") == ROOT / "layouts"
    assert shipped_dir("libraries") == ROOT / "vector_libraries"
    assert shipped_dir("recipes") == ROOT / "recipes"
    assert {"voronoi", "tissue-mix"} <= set(shipped_names("presets"))
    assert "tissue-small" in shipped_names("libraries") and DEMO in shipped_names("recipes")


def test_builtin_recipe_and_library_names(tmp_path):
    recipe = load_recipe(f"builtin:{DEMO}")
    assert recipe.file == ROOT / "recipes" / f"{DEMO}.yaml"
    assert recipe.library_path.resolve() == ROOT / "vector_libraries" / "tissue-small"
    text = recipe.file.read_text().replace("library: ../vector_libraries/tissue-small", "library: builtin:tissue-small")
    (tmp_path / "r.yaml").write_text(text)  # a recipe anywhere can name the shipped library
    mine = load_recipe(tmp_path / "r.yaml")
    assert mine.library_path == ROOT / "vector_libraries" / "tissue-small"
    assert len(mine.load_library()) == len(recipe.load_library()) > 0


def test_unknown_builtin_names_list_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match=f"unknown built-in recipe 'nope'; expected one of: .*{DEMO}"):
        load_recipe("builtin:nope")
    text = (ROOT / "recipes" / f"{DEMO}.yaml").read_text()
    text = text.replace("library: ../vector_libraries/tissue-small", "library: builtin:nope")
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(ConfigError, match="unknown built-in vector library 'nope'; expected one of: tissue-small") as e:
        load_recipe(tmp_path / "r.yaml").load_library()
    assert e.value.field == "library" and str(e.value.file) == str(tmp_path / "r.yaml")
    with pytest.raises(ConfigError):
        shipped_path("libraries", "../vector_libraries/tissue-small")  # names only, no paths


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_the_demo_outside_the_repository(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        else:
            shutil.copy2(p, src / name)

    # The wheel, built as pip builds it (isolated build environment with the declared setuptools).
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], tmp_path, env)
    (wheel,) = dist.glob("datagen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("datagen/_data/layouts/voronoi.yaml", "datagen/_data/layouts/tissue-mix.yaml",
                     "datagen/_data/vector_libraries/tissue-small/library.yaml",
                     "datagen/_data/vector_libraries/tissue-small/vectors.safetensors",
                     f"datagen/_data/recipes/{DEMO}.yaml",
                     "datagen/models/builtin/tissue-small/generator.safetensors", "datagen/layouts/canvas_scale.py"):
        assert expected in names, f"{expected} is missing from {wheel.name}"
    assert not any(n.endswith(("report.html", "contact_sheet.png")) for n in names)  # 6 MB of notes stay out
    assert wheel.stat().st_size < 20 << 20, f"the wheel is {wheel.stat().st_size >> 20} MB"

    # A fresh environment: the CPU torch first (README), then the wheel with its dependencies.
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    py = str(bin_dir / "python")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    _run([py, "-m", "pip", "install", "-q", "--no-compile", "torch==2.13.0"], tmp_path, env)
    _run([py, "-m", "pip", "install", "-q", "--no-compile", str(wheel)], tmp_path, env)

    # The README demo, from a folder that is not the repository.
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = _run([py, "-c", "import datagen, datagen.resources as r, datagen.layouts as L; print(datagen.__file__); "
                f"print(r.shipped_path('recipes', '{DEMO}')); print(','.join(L.available_presets()))"], work, env)
    module, recipe, presets = out.strip().splitlines()
    assert Path(module).is_relative_to(env_dir) and Path(recipe).is_relative_to(env_dir), out
    assert {"voronoi", "noise", "islands", "bands", "tissue-mix"} <= set(presets.split(","))
    datagen = str(bin_dir / "datagen")
    _run([datagen, "generate", recipe, "--out", "demo.zarr", "--num", "2", "--seed", "0"], work, env)
    report = _run([datagen, "validate", "demo.zarr"], work, env)
    assert "OK" in report, report

"""The paper's experiments (Algorithm 1, the grid-size study), GAN Dissection units and the
paint-layer caveat (conditioning / styles after the paint layer)."""

import json
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_assets
from PIL import Image
from stylegan2_toy import ToyStyleGAN2

from datagen.cli import main
from datagen.errors import DatagenError
from datagen.features import EfficientNetLite0
from datagen.models import StyleGAN2Generator
from datagen.models.caveats import PaintLayerWarning, fix_style, paint_layer_caveat, warn_paint_layer
from datagen.models.hooks import LayerHook
from datagen.seeding import sample_torch_generator
from datagen.vectors import VectorLibrary, visualize
from datagen.vectors.invert import add_to_library, image_target, invert, read_image, render_result
from datagen.vectors.units import edit_units, unit_hook

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lite0():
    return EfficientNetLite0(["blocks.4"])


def _features(extractor, images):
    with torch.no_grad():
        return extractor(images.float())["blocks.4"].float().mean(dim=(2, 3))


# ---- Algorithm 1 ------------------------------------------------------------------------------

def test_invert_loss_falls_and_the_result_is_closer_to_the_target(tiny_generator, lite0, tmp_path):
    gen, layer, size = tiny_generator, "dec.x4", (64, 64)
    with torch.no_grad(), LayerHook(gen.module, layer) as hook:  # a real activation vector of another sample
        gen.forward(gen.sample_inputs([sample_torch_generator(3, 0, "t")], size))
    truth = hook.original[0, :, 5, 9].clone()
    img = visualize(gen, truth[None], layer, mode="full", seeds=[4], size=size, progress=False)[0, 0]
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "target.png")
    y = image_target(lite0, [read_image(tmp_path / "target.png")], "blocks.4")

    r = invert(gen, y, layer, extractor=lite0, mode="vector", steps=20, lr=0.05, size=size, progress=False)
    assert r.final_loss < r.start_loss and r.final_cosine > r.start_cosine
    assert np.mean(r.losses[-5:]) < np.mean(r.losses[:5])
    # independently: the result renders closer to the target (feature space) than the starting point
    start = visualize(gen, _centre(gen, layer, size)[None], layer, mode="full", seeds=[0], size=size, progress=False,
                      dtype="float")[0]
    found = render_result(gen, r, seeds=[0], size=size)
    d_start = (_features(lite0, start) - y).abs().mean()
    d_found = (_features(lite0, found) - y).abs().mean()
    assert d_found < 0.5 * d_start

    g = invert(gen, y, layer, extractor=lite0, mode="grid", grid=2, steps=5, size=size, progress=False)
    assert g.final_loss < g.start_loss and g.background is not None and g.vector.shape == truth.shape
    full = invert(gen, y, layer, extractor=lite0, mode="full", steps=5, size=size, progress=False)
    assert full.vector is None and full.activations.shape == (16, 16, 16) and full.final_loss < full.start_loss


def _centre(gen, layer, size):
    """The default starting point of invert(): the layer's own centre pixel for visualize seed 0."""
    from datagen.vectors.visualize import seed_inputs

    with torch.no_grad(), LayerHook(gen.module, layer) as hook:
        gen.forward(seed_inputs(gen, [0], size)[0])
    a = hook.original[0]
    return a[:, a.shape[1] // 2, a.shape[2] // 2]


def test_add_to_library_records_provenance(tiny_generator, lite0, tmp_path):
    y = torch.randn(40)
    r = invert(tiny_generator, y, "dec.x4", extractor=lite0, steps=2, size=32, progress=False)
    lib, new_id = add_to_library(None, r, model_spec="tiny", sources=["a.png"], label="tumor")
    lib.save(tmp_path / "lib")
    lib, second = add_to_library(VectorLibrary.load(tmp_path / "lib"), r, model_spec="tiny", sources=["b.png", "c.png"])
    lib.save(tmp_path / "lib")
    back = VectorLibrary.load(tmp_path / "lib")
    assert (new_id, second) == (0, 1) and len(back) == 2 and back.record(0).label == "tumor"
    inv = back.extraction["inversions"]
    assert [e["id"] for e in inv] == [0, 1] and inv[1]["sources"] == ["b.png", "c.png"]
    assert {"steps", "final_loss", "start_loss", "layer", "model", "mode", "extractor"} <= set(inv[0])
    assert inv[0]["layer"] == "dec.x4" and inv[0]["model"] == "tiny" and inv[0]["steps"] == 2
    full = invert(tiny_generator, y, "dec.x4", extractor=lite0, mode="full", steps=1, size=32, progress=False)
    with pytest.raises(DatagenError, match="not a vector"):
        add_to_library(back, full, model_spec="tiny", sources=[])


def test_invert_cli_adds_a_vector(tmp_path, capsys):
    recipe = make_tiny_assets(tmp_path)
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "crop.png")
    lib = tmp_path / "library"
    n = len(VectorLibrary.load(lib))
    assert main(["vectors", "invert", str(tmp_path / "crop.png"), "--library", str(lib), "--steps", "3", "--size", "64",
                 "--device", "cpu", "--label", "inv", "--quiet", "--render", str(tmp_path / "inv.png")]) == 0
    back = VectorLibrary.load(lib)
    assert len(back) == n + 1 and back.records[-1].label == "inv" and (tmp_path / "inv.png").is_file()
    assert back.extraction["inversions"][-1]["sources"] == [str(tmp_path / "crop.png")]
    assert "added to" in capsys.readouterr().out
    # one-line errors
    assert main(["vectors", "invert", str(tmp_path / "crop.png"), "--library", str(lib), "--mode", "full"]) == 2
    assert "--library" in capsys.readouterr().err
    assert main(["vectors", "invert", str(tmp_path / "nope.png"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and len(err.strip().splitlines()) == 1
    assert recipe.exists()


# ---- grid study --------------------------------------------------------------------------------

def test_grid_study_on_a_tiny_model(tmp_path, capsys):
    make_tiny_assets(tmp_path)
    lib_dir = tmp_path / "library"
    lib = VectorLibrary.load(lib_dir)
    scores = torch.linspace(0.5, 1.0, len(lib))
    lib.set_scores(scores, {"threshold": 0.8})
    lib.save(lib_dir)
    assert main(["vectors", "grid-study", str(lib_dir), "--size", "64", "--per-group", "2", "--seeds", "1",
                 "--grids", "0", "1", "2", "--targets", "1", "--steps", "2", "--device", "cpu", "--quiet",
                 "--json", str(tmp_path / "g.json"), "--figure", str(tmp_path / "g.png")]) == 0
    result = json.loads((tmp_path / "g.json").read_text())
    rep, inv = result["replace"], result["invert"]
    assert rep["grids"] == [1, 2] and rep["threshold"] == 0.8
    assert len(rep["groups"]["tileable"]["ids"]) == 2 and len(rep["groups"]["non_tileable"]["ids"]) == 2
    assert all(lib.record(i).tileability >= 0.8 for i in rep["groups"]["tileable"]["ids"])
    for group in rep["groups"].values():
        for g in ("1", "2"):
            assert -1 <= group["by_grid"][g]["mean"] <= 1
    assert inv["grids"] == [0, 1, 2] and set(inv["by_grid"]) == {"0", "1", "2"} and inv["best_grid"] in (0, 1, 2)
    assert Image.open(tmp_path / "g.png").size[0] > 0
    assert "tileable" in capsys.readouterr().out


# ---- units (GAN Dissection) --------------------------------------------------------------------

def test_edit_units_ablates_and_inserts_inside_the_region_only():
    act = torch.randn(2, 6, 4, 5)
    region = torch.zeros(2, 4, 5, dtype=torch.bool)
    region[:, 1:3, 2:4] = True
    out = edit_units(act, region, [1, 4], "ablate")
    assert torch.equal(out[:, [1, 4]][region[:, None].expand(2, 2, 4, 5)], torch.zeros(2 * 2 * 4))
    assert torch.equal(out[:, [1, 4]][~region[:, None].expand(2, 2, 4, 5)], act[:, [1, 4]][~region[:, None].expand(2, 2, 4, 5)])
    assert torch.equal(out[:, [0, 2, 3, 5]], act[:, [0, 2, 3, 5]])
    ins = edit_units(act, region[0], torch.tensor([3]), "insert", value=torch.tensor([7.0]))
    assert (ins[:, 3][region] == 7).all() and torch.equal(ins[:, 3][~region], act[:, 3][~region])
    assert torch.equal(act, act.clone())  # input untouched
    with pytest.raises(DatagenError, match="value"):
        edit_units(act, region, [0], "insert")
    with pytest.raises(DatagenError, match="unit indices"):
        edit_units(act, region, [6])
    with pytest.raises(DatagenError, match="region"):
        edit_units(act, region[:, :2], [0])


def test_unit_hook_resizes_the_region_to_the_layer(tiny_generator):
    gen = tiny_generator
    inputs = gen.sample_inputs([sample_torch_generator(0, 0, "t")], (32, 32))
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[:16] = True  # top half, at image resolution
    with torch.no_grad():
        with unit_hook(gen.module, "dec.x4", region, [0, 1]), LayerHook(gen.module, "dec.x4") as rec:
            gen.forward(inputs)
    a = rec.original[0]  # recorded after the edit (hooks run in order)
    assert (a[[0, 1], :4] == 0).all() and (a[[0, 1], 4:] != 0).any()


def _builtin_recipe(tmp_path: Path) -> Path:
    (tmp_path / "r.yaml").write_text(textwrap.dedent(f"""\
        model: builtin:tissue-small
        layer: dec.x16
        library: {REPO / 'vector_libraries' / 'tissue-small'}
        size: [128, 128]
        classes:
          - {{name: background, id: 0, color: "#f2f2f2", label: background}}
          - {{name: tumor, id: 1, color: "#d62728", label: tumor}}
          - {{name: stroma, id: 2, color: "#1f77b4", label: stroma}}
          - {{name: dense, id: 3, color: "#2ca02c", label: dense}}
        layout: {{kind: voronoi, cells: [3, 6]}}
        paint: {{mask: cells}}
        """))
    return tmp_path / "r.yaml"


def test_ablating_top_units_hurts_a_class_more_than_random_units(tmp_path):
    """Built-in model at 128 px, units of dec.x8 (the decoder stage after the paint layer): for every
    class, zeroing its 12 top-IoU units (of 96) inside its regions lowers the class's response (its
    centred mean tileability feature against the unedited renders', see datagen.vectors.units) more
    than zeroing 12 random units does, on average over 3 random draws."""
    from datagen.generate import build_renderer, load_recipe_model
    from datagen.recipe import load_recipe
    from datagen.vectors.units import ablation_effect, rank_units

    recipe = load_recipe(_builtin_recipe(tmp_path))
    renderer = build_renderer(recipe, load_recipe_model(recipe, "cpu"), 0)
    ranking = rank_units(renderer, "dec.x8", num=8, quantile=0.99, progress=False)
    assert ranking.iou.shape == (4, 96) and (ranking.iou >= 0).all() and (ranking.iou <= 1).all()
    for name in ranking.class_names:
        e = ablation_effect(renderer, ranking, name, 12, num=4, random_draws=3)
        assert e["response_top"] < e["response_random_mean"], e


def test_units_cli_ranks_a_recipes_classes(tmp_path, capsys):
    recipe = make_tiny_assets(tmp_path)
    assert main(["vectors", "units", str(recipe), "--num", "2", "--top", "3", "--device", "cpu", "--quiet",
                 "--json", str(tmp_path / "u.json")]) == 0
    data = json.loads((tmp_path / "u.json").read_text())
    assert data["layer"] == "dec.x4" and set(data["classes"]) == {"background", "tumor", "stroma"}
    assert all(len(c["units"]) == 3 for c in data["classes"].values())
    assert "tumor" in capsys.readouterr().out
    assert main(["vectors", "units", str(recipe), "--layer", "enc.x2", "--quiet"]) == 2
    assert "--layer" in capsys.readouterr().err


# ---- inputs after the paint layer ----------------------------------------------------------------

def test_digipath_caveat_flags_encoder_layers(tiny_generator):
    assert "conditioning" in paint_layer_caveat(tiny_generator, "enc.x4")
    for layer in ("mid", "dec.x4", "dec.x1"):
        assert paint_layer_caveat(tiny_generator, layer) is None
    with pytest.warns(PaintLayerWarning, match="encoder"):
        warn_paint_layer(tiny_generator, "enc.x8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_paint_layer(tiny_generator, "dec.x4") is None
    with pytest.raises(DatagenError, match="StyleGAN2"):
        fix_style(tiny_generator, 0, "dec.x4")


def test_stylegan2_caveat_and_fixed_style():
    torch.manual_seed(0)
    gen = StyleGAN2Generator(ToyStyleGAN2(img_resolution=32))
    layer = "synthesis.b16.conv1"
    assert gen.default_layer == layer  # the paper's 16x16 layer
    assert "style" in paint_layer_caveat(gen, layer)
    assert paint_layer_caveat(gen, "synthesis.b32.torgb") is None  # nothing acts after the last layer
    inputs = gen.sample_inputs([sample_torch_generator(0, i, "z") for i in range(2)], (32, 32))
    v = torch.randn(16)
    paint_all = dict(edit=lambda a: v[None, :, None, None].expand_as(a).clone())
    after = "synthesis.b32.conv1"  # the feature path after the paint layer (the RGB skip path also carries
    # the earlier blocks' own, unpainted, contributions)

    def painted() -> torch.Tensor:
        with torch.no_grad(), LayerHook(gen.module, layer, **paint_all), LayerHook(gen.module, after) as rec:
            gen.forward(inputs)
        return rec.original

    free = painted()
    assert not torch.allclose(free[0], free[1], atol=1e-4)  # same painted layer, different styles after it
    gen.set_fixed_style(3, after=layer)
    assert paint_layer_caveat(gen, layer) is None and gen.styles_fixed_after(layer)
    assert paint_layer_caveat(gen, "synthesis.b8.conv1") is not None  # styles of b16.conv0 still vary
    with torch.no_grad():
        plain = gen.forward(inputs)
    fixed = painted()
    assert torch.allclose(fixed[0], fixed[1], atol=1e-5)  # painting the whole layer now decides what follows
    assert not torch.allclose(plain[0], plain[1], atol=1e-4)  # unpainted samples still differ (earlier styles)
    gen.set_fixed_style(None)
    with torch.no_grad():
        assert torch.equal(gen.forward(inputs), gen.forward(inputs))
    assert paint_layer_caveat(gen, layer) is not None


def test_recipe_fixed_style_is_checked(tmp_path, tiny_generator):
    from datagen.errors import ConfigError
    from datagen.recipe import load_recipe

    base = "size: 32\nclasses:\n  - {name: a, id: 0, color: '#000000', keep: true}\nlayout: {kind: voronoi}\n"
    (tmp_path / "r.yaml").write_text(base + "fixed_style: 7\n")
    r = load_recipe(tmp_path / "r.yaml")
    assert r.style_seed == 7
    with pytest.raises(ConfigError, match="fixed_style"):
        r.validate_against(tiny_generator, None)
    (tmp_path / "r.yaml").write_text(base + "fixed_style: maybe\n")
    with pytest.raises(ConfigError, match="fixed_style: expected true, false or a style seed"):
        load_recipe(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text(base + "layer: enc.x4\n")
    with pytest.warns(PaintLayerWarning):
        load_recipe(tmp_path / "r.yaml").validate_against(tiny_generator, None)


def test_recipe_fixed_style_reaches_the_generator(tmp_path):
    """load_recipe_model applies fixed_style after the paint layer (what generate, preview and canvas
    load), so two samples painted alike share everything after it: the toy StyleGAN2's b32.conv1."""
    import pickle

    from datagen.errors import ConfigError
    from datagen.generate import load_recipe_model
    from datagen.recipe import load_recipe
    from datagen.render import painted_forward

    torch.manual_seed(0)
    with open(tmp_path / "net.pkl", "wb") as f:
        pickle.dump({"G_ema": ToyStyleGAN2(img_resolution=32)}, f)
    base = (f"model: stylegan2:{tmp_path / 'net.pkl'}\ntrust: true\nsize: 32\n"
            "classes:\n  - {name: a, id: 0, color: '#000000', keep: true}\nlayout: {kind: voronoi}\n")

    def painted(text: str):
        (tmp_path / "r.yaml").write_text(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PaintLayerWarning)
            gen = load_recipe_model(load_recipe(tmp_path / "r.yaml"), "cpu")
        layer = gen.default_layer
        inputs = gen.sample_inputs([sample_torch_generator(0, i, "noise") for i in range(2)], (32, 32))
        labels = torch.zeros(2, *gen.layer_size(layer, (32, 32)), dtype=torch.long)  # the whole layer: one vector
        vectors = torch.randn(1, 1, gen.layer(layer).channels, generator=torch.Generator().manual_seed(0)).expand(2, 1, -1)
        _, (after,) = painted_forward(gen, layer, inputs, labels, vectors, record=["synthesis.b32.conv1"])
        return gen, after

    gen, free = painted(base)
    assert gen.fixed_style is None and not torch.allclose(free[0], free[1], atol=1e-4)
    gen, fixed = painted(base + "fixed_style: 3\n")
    assert gen.fixed_style == 3 and gen.fixed_style_after == gen.default_layer
    assert gen.styles_fixed_after(gen.default_layer) and paint_layer_caveat(gen, gen.default_layer) is None
    assert torch.allclose(fixed[0], fixed[1], atol=1e-5)
    # a model without style inputs: refused while loading, naming the field
    (tmp_path / "d.yaml").write_text("size: 32\nclasses:\n  - {name: a, id: 0, color: '#000000', keep: true}\n"
                                     "layout: {kind: voronoi}\nfixed_style: true\n")
    with pytest.raises(ConfigError, match="StyleGAN2") as e:
        load_recipe_model(load_recipe(tmp_path / "d.yaml"), "cpu")
    assert e.value.field == "fixed_style" and e.value.file == str(tmp_path / "d.yaml")

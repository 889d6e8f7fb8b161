"""Procedural layouts: determinism, class ids, area fractions, post-processing, masks, presets (with every
shipped recipe), sizes in pixels and canvas scaling, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from datagen.errors import ConfigError
from datagen.layouts import (LAYOUT_KINDS, MIN_REGIONS, PRESET_DIR, FewRegionsWarning, IslandsLayout, LayoutSpec,
                             MaskLayout, available_presets, count_regions, load_preset, parse_layout,
                             remove_small_regions, scale_layout_for_canvas, smooth_labels, warn_few_regions)
from datagen.recipe import load_recipe

IDS = {"background": 0, "tumor": 3, "stroma": 5, "lymphocytes": 7, "necrosis": 9}
FOUR = {"tumor": 1, "stroma": 1, "lymphocytes": 1, "background": 1}


def rng(i: int = 0) -> np.random.Generator:
    return np.random.default_rng(i)


def boundary_length(m: np.ndarray) -> int:
    return int((m[1:] != m[:-1]).sum() + (m[:, 1:] != m[:, :-1]).sum())


def min_component(m: np.ndarray) -> int:
    sizes = []
    for cid in np.unique(m):
        lab, n = ndimage.label(m == cid)
        sizes += list(np.bincount(lab.ravel())[1:])
    return min(sizes)


@pytest.fixture
def id_mask(tmp_path):
    """A 40x60 grayscale id mask: tumour square on stroma, a background strip."""
    a = np.full((40, 60), IDS["stroma"], np.uint8)
    a[10:30, 20:40] = IDS["tumor"]
    a[:, :5] = IDS["background"]
    Image.fromarray(a).save(tmp_path / "ids.png")
    return tmp_path / "ids.png", a


def all_kinds(mask_path) -> dict[str, LayoutSpec]:
    return {
        "voronoi": parse_layout({"kind": "voronoi", "classes": FOUR, "warp": 0.03, "relax": 1}),
        "noise": parse_layout({"kind": "noise", "classes": FOUR}),
        "noise-levels": parse_layout({"kind": "noise", "classes": FOUR, "mode": "levels"}),
        "islands": parse_layout({"kind": "islands", "background": "stroma", "islands": {"tumor": 2, "lymphocytes": 1},
                                 "nest": {"tumor": {"inner": "necrosis"}}}),
        "bands": parse_layout({"kind": "bands", "classes": FOUR, "roughness": 0.01}),
        "mask": parse_layout({"kind": "mask", "path": str(mask_path), "flip": True, "rotate": True}),
    }


def test_registry_covers_every_kind():
    assert set(LAYOUT_KINDS) == {"voronoi", "noise", "islands", "bands", "mask"}
    for kind, cls in LAYOUT_KINDS.items():
        assert cls.model_fields["kind"].default == kind


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_every_kind_is_deterministic_and_uses_only_known_ids(id_mask, size):
    for name, spec in all_kinds(id_mask[0]).items():
        spec = spec.model_copy(update={"smooth": 1.0, "min_region": 8})
        a = spec.generate(rng(11), size, IDS)
        b = spec.generate(rng(11), size, IDS)
        assert a.shape == size and a.dtype == np.uint8, name
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert set(np.unique(a)) <= set(IDS.values()), name
        # Different rng states give different maps (a mask with one file may repeat).
        if name != "mask":
            assert any(not np.array_equal(a, spec.generate(rng(s), size, IDS)) for s in range(12, 15)), name


@pytest.mark.parametrize("layout", [
    {"kind": "voronoi", "classes": {"tumor": 3, "stroma": 1, "lymphocytes": 1}, "cells": [20, 40]},
    {"kind": "noise", "classes": {"tumor": 3, "stroma": 1, "lymphocytes": 1}},
    {"kind": "noise", "classes": {"tumor": 3, "stroma": 1, "lymphocytes": 1}, "mode": "levels"},
])
def test_area_fractions_follow_weights(layout):
    spec = parse_layout(layout)
    fracs = np.mean([np.bincount(spec.generate(rng(i), (64, 64), IDS).ravel(), minlength=10)[[3, 5, 7]] / 64**2
                     for i in range(30)], axis=0)
    np.testing.assert_allclose(fracs, [0.6, 0.2, 0.2], atol=0.07)


@pytest.mark.parametrize("size", [(128, 128), (300, 200)])
def test_noise_blobs_match_weights_in_every_map(size):
    weights = {"tumor": 5, "stroma": 2, "lymphocytes": 1, "background": 0.5}
    spec = parse_layout({"kind": "noise", "classes": weights})
    want = np.array(list(weights.values())) / sum(weights.values())
    for i in range(12):
        m = spec.generate(rng(i), size, IDS)
        got = np.array([(m == IDS[n]).mean() for n in weights])
        assert np.abs(got - want).max() < 0.02, (i, got)


def test_zero_weight_class_never_appears():
    for kind in ("voronoi", "noise", "bands"):
        spec = parse_layout({"kind": kind, "classes": {"tumor": 1, "stroma": 0, "lymphocytes": 1}})
        for i in range(5):
            assert IDS["stroma"] not in spec.generate(rng(i), (64, 64), IDS), kind


def test_min_region_is_enforced():
    noisy = parse_layout({"kind": "noise", "classes": FOUR, "scale": 0.05, "octaves": 5, "persistence": 0.9})
    raw = noisy.generate(rng(1), (96, 96), IDS)
    assert min_component(raw) < 50  # the test needs small specks to start with
    for area in (50, 300):
        out = remove_small_regions(raw, area)
        assert len(np.unique(out)) == 1 or min_component(out) >= area
        assert set(np.unique(out)) <= set(np.unique(raw))
    spec = noisy.model_copy(update={"min_region": 120})
    for i in range(5):
        m = spec.generate(rng(i), (96, 96), IDS)
        assert len(np.unique(m)) == 1 or min_component(m) >= 120


@pytest.mark.parametrize("area", [5, 60, 500])
def test_min_region_on_white_noise(area):
    m = np.array([3, 5, 7], np.uint8)[rng(4).integers(0, 3, (40, 40))]
    out = remove_small_regions(m, area)
    assert len(np.unique(out)) == 1 or min_component(out) >= area


def test_min_region_merges_into_surrounding_class():
    m = np.full((30, 30), 5, np.uint8)
    m[:, 20:] = 7
    m[10:13, 5:8] = 3  # a 9 px speck inside class 5
    out = remove_small_regions(m, 10)
    assert (out[10:13, 5:8] == 5).all() and (out[:, 20:] == 7).all()


def test_min_region_larger_than_everything_leaves_one_class():
    m = (np.indices((20, 20)).sum(axis=0) % 3).astype(np.uint8)  # diagonal stripes, all regions small
    out = remove_small_regions(m, 10_000)
    assert len(np.unique(out)) == 1


@pytest.mark.parametrize("sigma", [1.5, 4.0, 8.0])
def test_smoothing_reduces_boundary_length(sigma):
    spec = parse_layout({"kind": "noise", "classes": FOUR, "scale": 0.2, "persistence": 0.8, "octaves": 6})
    raw = spec.generate(rng(3), (160, 160), IDS)
    out = smooth_labels(raw, sigma)
    assert boundary_length(out) < 0.8 * boundary_length(raw)
    assert set(np.unique(out)) <= set(np.unique(raw))
    # Same as the textbook definition (argmax of Gaussian-blurred one-hots), up to near-ties
    # and the block-averaged shortcut used for large sigma.
    present = np.unique(raw)
    blurred = np.stack([ndimage.gaussian_filter((raw == c).astype(np.float32), sigma, mode="nearest")
                        for c in present])
    assert (out == present[blurred.argmax(axis=0)]).mean() > 0.97
    via_spec = spec.model_copy(update={"smooth": sigma}).generate(rng(3), (160, 160), IDS)
    np.testing.assert_array_equal(via_spec, out)


def test_smoothing_straight_edge_is_kept():
    m = np.zeros((64, 64), np.uint8)
    m[:, 32:] = 3
    np.testing.assert_array_equal(smooth_labels(m, 5.0), m)


def test_islands_background_dominates_and_nesting_lies_inside():
    spec = parse_layout({"kind": "islands", "background": "stroma", "islands": {"tumor": 1, "lymphocytes": 1},
                         "count": [4, 8], "nest": {"tumor": {"inner": "necrosis", "probability": 1, "rim": 2}}})
    nested_seen = 0
    for i in range(10):
        m = spec.generate(rng(i), (128, 128), IDS)
        assert (m == IDS["stroma"]).mean() > 0.5
        core = m == IDS["necrosis"]
        nested_seen += int(core.any())
        # Every pixel within 2 px (the rim) of a core pixel is core or tumour.
        near = ndimage.binary_dilation(core, np.ones((5, 5), bool))
        assert np.isin(m[near], [IDS["necrosis"], IDS["tumor"]]).all()
    assert nested_seen >= 5


def test_islands_count_zero_is_all_background():
    spec = parse_layout({"kind": "islands", "background": "stroma", "islands": {"tumor": 1}, "count": 0})
    assert (spec.generate(rng(), (32, 32), IDS) == IDS["stroma"]).all()


def test_bands_are_parallel_stripes():
    spec = parse_layout({"kind": "bands", "classes": {"tumor": 1, "stroma": 1}, "angle": 0, "wave": 0,
                         "width": 0.25})
    m = spec.generate(rng(2), (64, 64), IDS)
    assert (m == m[:, :1]).all()  # angle 0: horizontal bands, constant along each row
    changes = np.flatnonzero(m[1:, 0] != m[:-1, 0])
    assert np.all(np.diff(changes) % 16 == 0)  # every band is 16 px wide


def test_rgb_mask_maps_colours_and_rejects_unknown(tmp_path):
    a = np.zeros((20, 30, 3), np.uint8)
    a[:] = (255, 0, 0)
    a[:, 15:] = (0, 128, 255)
    Image.fromarray(a).save(tmp_path / "rgb.png")
    spec = parse_layout({"kind": "mask", "path": "rgb.png", "colors": {"tumor": "#FF0000", "stroma": "#0080ff"}},
                        base_dir=tmp_path)
    m = spec.generate(rng(), (40, 60), IDS)
    assert (m[:, :30] == IDS["tumor"]).all() and (m[:, 30:] == IDS["stroma"]).all()
    assert spec.class_names() == {"tumor", "stroma"}

    a[0:2, 0:3] = (1, 2, 3)
    Image.fromarray(a).save(tmp_path / "bad.png")
    bad = parse_layout({"kind": "mask", "path": "bad.png", "colors": {"tumor": "#ff0000", "stroma": "#0080ff"}},
                       base_dir=tmp_path)
    with pytest.raises(ConfigError) as e:
        bad.generate(rng(), (20, 30), IDS)
    assert "#010203" in str(e.value) and "6 px" in str(e.value) and "bad.png" in str(e.value)
    assert e.value.field == "layout.colors"


def test_id_mask_resizes_by_nearest_and_checks_ids(id_mask, tmp_path):
    path, a = id_mask
    spec = parse_layout({"kind": "mask", "path": str(path)})
    np.testing.assert_array_equal(spec.generate(rng(), (40, 60), IDS), a)
    big = spec.generate(rng(), (80, 120), IDS)
    np.testing.assert_array_equal(big[::2, ::2], a)

    b = a.copy()
    b[0, 0] = 200
    Image.fromarray(b).save(tmp_path / "badids.png")
    bad = parse_layout({"kind": "mask", "path": str(tmp_path / "badids.png")})
    with pytest.raises(ConfigError) as e:
        bad.generate(rng(), (40, 60), IDS)
    assert "200 (1 px)" in str(e.value) and "badids.png" in str(e.value)


def test_paletted_mask_uses_indices_as_ids(tmp_path):
    a = np.full((16, 16), IDS["tumor"], np.uint8)
    a[8:] = IDS["lymphocytes"]
    im = Image.fromarray(a, mode="L").convert("P")
    im.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    im.save(tmp_path / "pal.png")
    m = parse_layout({"kind": "mask", "path": str(tmp_path / "pal.png")}).generate(rng(), (16, 16), IDS)
    assert set(np.unique(m)) == {IDS["tumor"], IDS["lymphocytes"]}


def test_mask_glob_picks_files_per_sample_and_augments(tmp_path):
    for i, cid in enumerate([3, 5, 7]):
        a = np.full((8, 8), cid, np.uint8)
        a[0, 0] = 0  # a marker that shows flips and rotations
        Image.fromarray(a).save(tmp_path / f"m{i}.png")
    spec = parse_layout({"kind": "mask", "path": "m*.png", "flip": True, "rotate": True}, base_dir=tmp_path)
    assert isinstance(spec, MaskLayout) and len(spec.files) == 3 and spec.base_dir == tmp_path
    maps = [spec.generate(rng(i), (8, 8), IDS) for i in range(40)]
    assert {int(m[4, 4]) for m in maps} == {3, 5, 7}
    corners = {tuple(np.argwhere(m == 0)[0]) for m in maps}
    assert corners == {(0, 0), (0, 7), (7, 0), (7, 7)}
    # Non-square outputs keep their shape under rotation.
    assert spec.generate(rng(1), (8, 12), IDS).shape == (8, 12)


def test_mask_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_layout({"kind": "mask", "path": "nope/*.png"}, file=tmp_path / "recipe.yaml")
    assert e.value.field == "layout.path" and "no file matches" in str(e.value)
    assert e.value.file == str(tmp_path / "recipe.yaml")


def test_mask_relative_path_resolves_next_to_recipe_file(id_mask):
    path, a = id_mask
    spec = parse_layout({"kind": "mask", "path": path.name}, file=path.parent / "recipe.yaml")
    np.testing.assert_array_equal(spec.generate(rng(), a.shape, IDS), a)


def test_colour_mask_without_colors_is_config_error(tmp_path):
    a = np.zeros((4, 4, 3), np.uint8)
    a[..., 0] = 200
    Image.fromarray(a).save(tmp_path / "c.png")
    with pytest.raises(ConfigError, match="colors"):
        parse_layout({"kind": "mask", "path": str(tmp_path / "c.png")}).generate(rng(), (4, 4), IDS)


def test_presets_parse_and_generate():
    names = available_presets()
    assert {"voronoi", "noise", "islands", "bands", "tissue-mix"} <= set(names)
    for name in names:
        assert (PRESET_DIR / f"{name}.yaml").read_text().startswith("#"), f"{name}.yaml needs a comment header"
        spec = parse_layout(load_preset(name), file=PRESET_DIR / f"{name}.yaml")
        assert spec.class_names() == set() and spec.omitted_classes(), f"{name} should be class-agnostic"
        m = spec.generate(rng(), (96, 96), IDS)  # omitted classes: every id passed in, equal weights
        assert m.shape == (96, 96) and set(np.unique(m)) <= set(IDS.values())
    # A preset name is accepted wherever a layout mapping is.
    assert isinstance(parse_layout("tissue-mix"), IslandsLayout)


def shipped_recipes() -> list[Path]:
    return sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe_file", shipped_recipes(), ids=lambda p: p.stem)
@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_fits_every_shipped_recipe(recipe_file, preset):
    """`datagen canvas RECIPE --layout PRESET` and `layout: PRESET` resolve a preset this way (no model needed)."""
    recipe = load_recipe(recipe_file)
    recipe.layout, recipe._layout = preset, None
    spec = recipe.parsed_layout()
    ids = {c.name: c.id for c in recipe.classes}
    assert spec.class_names() == set(ids) and not spec.omitted_classes()  # every recipe class is painted
    seen: set[int] = set()
    for i in range(6):
        m = spec.generate(rng(i), tuple(recipe.size), ids)
        assert m.shape == tuple(recipe.size) and m.dtype == np.uint8
        assert set(np.unique(m).tolist()) <= set(ids.values())
        seen |= set(np.unique(m).tolist())
    assert len(seen) >= min(3, len(ids)), (preset, seen)


def test_omitted_classes_take_the_recipe_weights_in_order():
    spec = parse_layout({"kind": "noise", "scale": 0.2}, classes={"a": 1, "b": 3})
    assert spec.classes == {"a": 1.0, "b": 3.0}
    m = spec.generate(rng(), (128, 128), {"a": 1, "b": 2})
    assert abs((m == 2).mean() - 0.75) < 0.03
    isl = parse_layout({"kind": "islands", "count": 30, "nest": {"*": {"probability": 1, "size": 0.5, "rim": 1}}},
                       classes={"glass": 1, "tumor": 2, "stroma": 1})
    assert isl.background == "glass" and isl.islands == {"tumor": 2.0, "stroma": 1.0}
    assert {p: n.inner for p, n in isl.nests().items()} == {"tumor": "glass", "stroma": "glass"}
    # background left out but islands listed: the first class not among them
    assert parse_layout({"kind": "islands", "islands": {"glass": 1}}, classes={"glass": 1, "x": 1}).background == "x"
    # a hole of the background inside every island: background pixels with island pixels all around
    m = isl.generate(rng(), (128, 128), {"glass": 0, "tumor": 1, "stroma": 2})
    holes = ndimage.binary_fill_holes(m > 0) & (m == 0)
    assert holes.sum() > 50


def test_named_classes_are_an_error_only_when_the_recipe_lacks_them(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("kind: voronoi\nclasses: {tumor: 1, lymphocytes: 1}\n")
    assert parse_layout(p, classes={"tumor": 1, "lymphocytes": 1, "x": 1}).classes == {"tumor": 1, "lymphocytes": 1}
    spec = parse_layout(p, classes={"tumor": 1, "stroma": 1})
    with pytest.raises(ConfigError) as e:
        spec.check_classes({"tumor": 1, "stroma": 2})
    assert e.value.field == "layout.classes.lymphocytes" and e.value.file == str(p)
    assert "tumor, stroma" in str(e.value) or "stroma, tumor" in str(e.value)


def test_omitted_classes_with_zero_weights_is_an_error():
    with pytest.raises(ConfigError, match="weights are all 0") as e:
        parse_layout("voronoi", classes={"a": 0, "b": 0})
    assert e.value.field == "layout.classes" and str(e.value.file).endswith("voronoi.yaml")


def test_reference_px_keeps_region_sizes_in_pixels():
    spec = parse_layout({"kind": "voronoi", "reference_px": 64, "cells": [4, 8], "warp": 0.02}, classes=FOUR)
    big = spec.at_size((256, 256))
    assert big.reference_px is None and big.cells == (64, 128) and big.warp == pytest.approx(0.005)
    assert spec.at_size((64, 32)).cells == (2, 4)  # counts per 64 x 64 px, at least 1 cell
    plain_64 = spec.model_copy(update={"reference_px": None})
    np.testing.assert_array_equal(spec.generate(rng(1), (64, 64), IDS),
                                  plain_64.generate(rng(1), (64, 64), IDS))
    isl = parse_layout({"kind": "islands", "reference_px": 100, "count": 2, "radius": 0.1}, classes=FOUR)
    assert isl.at_size((400, 200)).count == 16 and isl.at_size((400, 200)).radius == pytest.approx(0.05)
    # the mean region area in px does not depend on the output size
    plain = spec.model_copy(update={"reference_px": None, "warp": 0.0})
    sized = spec.model_copy(update={"warp": 0.0})

    def mean_area(layout, n):
        return np.mean([n * n / count_regions(layout.generate(rng(i), (n, n), {k: j for j, k in enumerate(FOUR)}))
                        for i in range(4)])

    assert mean_area(sized, 256) == pytest.approx(mean_area(sized, 64), rel=0.5)
    assert mean_area(plain, 256) > 8 * mean_area(plain, 64)  # fractions: regions grow with the output


def test_scale_layout_for_canvas_matches_the_recipe_samples():
    """The demo recipe's layout on a 2048 px canvas drawn at 1/16 (dec.x16): many regions of sample size."""
    recipe = load_recipe(shipped_recipes()[0])
    spec, ids = recipe.parsed_layout(), {c.name: c.id for c in recipe.classes}
    low = (2048 // 16, 2048 // 16)
    scaled = scale_layout_for_canvas(spec, recipe.size, layout_scale=16)
    assert scaled.reference_px == min(recipe.size) / 16 and spec.reference_px is None  # the original is unchanged
    assert scaled.min_region == round(spec.min_region / 256)
    sample_area = np.mean([recipe.size[0] * recipe.size[1] / count_regions(spec.generate(rng(i), recipe.size, ids))
                           for i in range(6)])
    maps = [scaled.generate(rng(i), low, ids) for i in range(3)]
    canvas_area = np.mean([low[0] * low[1] * 256 / count_regions(m) for m in maps])  # in canvas px
    assert canvas_area == pytest.approx(sample_area, rel=0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewRegionsWarning)
        assert warn_few_regions(maps[0]) > 8 * MIN_REGIONS
    with pytest.warns(FewRegionsWarning, match="reference_px"):
        warn_few_regions(spec.generate(rng(0), low, ids), what="the 2048x2048 canvas")  # unscaled: a few regions
    isl = parse_layout("tissue-mix", classes=FOUR)
    assert all(n.rim == 0 for n in scale_layout_for_canvas(isl, (256, 256), layout_scale=16).nest.values())


def test_count_regions():
    m = np.zeros((8, 8), np.uint8)
    m[1:3, 1:3] = 1
    m[5:7, 5:7] = 1
    m[0, 7] = 2
    assert count_regions(m) == 4  # background, two squares of 1, one pixel of 2
    assert count_regions(np.zeros((4, 4), np.uint8)) == 1


def test_many_voronoi_seeds_use_a_tree_with_the_same_answer():
    from datagen.layouts.voronoi import _TREE_SEEDS, nearest_seed

    r = rng(3)
    seeds = (r.random((_TREE_SEEDS + 100, 2)) * 500).astype(np.float32)
    py, px = (r.random(20000) * 500).astype(np.float32), (r.random(20000) * 500).astype(np.float32)
    d = (py[:, None] - seeds[None, :, 0].astype(np.float64)) ** 2 + (px[:, None] - seeds[None, :, 1]) ** 2
    assert (nearest_seed(py, px, seeds) == d.argmin(axis=1)).mean() > 0.999


def test_load_preset_by_path_and_unknown_name(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("kind: noise\nclasses: {tumor: 1}\n")
    assert load_preset(p)["kind"] == "noise"
    assert parse_layout("mine.yaml", base_dir=tmp_path).kind == "noise"
    with pytest.raises(ConfigError, match="voronoi"):
        load_preset("no-such-preset")


def test_unknown_class_names_the_field():
    spec = parse_layout({"kind": "islands", "background": "stroma", "islands": {"tumor": 1},
                         "nest": {"tumor": {"inner": "mucus"}}}, file="r.yaml")
    assert spec.class_names() == {"stroma", "tumor", "mucus"}
    with pytest.raises(ConfigError) as e:
        spec.generate(rng(), (16, 16), IDS)
    assert e.value.field == "layout.nest.tumor.inner" and e.value.file == "r.yaml" and "mucus" in str(e.value)


@pytest.mark.parametrize("data, field, words", [
    ({"kind": "hexagons", "classes": FOUR}, "layout.kind", ["hexagons", "voronoi", "islands"]),
    ({"classes": FOUR}, "layout.kind", ["missing", "noise"]),
    ({"kind": "voronoi", "classes": FOUR, "cells": "many"}, "layout.cells", ["integer", "[lo, hi]"]),
    ({"kind": "voronoi", "classes": FOUR, "cells": [30, 10]}, "layout.cells", ["lo <= hi"]),
    ({"kind": "noise", "classes": FOUR, "scale": [0.1, 0.2, 0.3]}, "layout.scale", ["[lo, hi]"]),
    ({"kind": "noise", "classes": {"tumor": -1}}, "layout.classes.tumor", ["greater than or equal"]),
    ({"kind": "noise", "classes": {}}, "layout.classes", ["at least 1"]),
    ({"kind": "noise", "classes": {"tumor": 0}}, "layout.classes", ["weight > 0"]),
    ({"kind": "noise", "classes": FOUR, "colour": 3}, "layout.colour", ["unknown field", "scale", "smooth"]),
    ({"kind": "noise", "classes": FOUR, "mode": "waves"}, "layout.mode", ["blobs", "levels"]),
    ({"kind": "bands", "classes": FOUR, "smooth": True}, "layout.smooth", ["number"]),
    ({"kind": "bands", "classes": FOUR, "min_region": 2.5}, "layout.min_region", ["integer"]),
    ({"kind": "islands", "islands": FOUR, "reference_px": 0}, "layout.reference_px", ["greater than 0"]),
    ({"kind": "mask", "path": "x.png", "reference_px": 256}, "layout.reference_px", ["procedural kinds only"]),
    ({"kind": "islands", "background": "stroma", "islands": FOUR, "nest": {"tumor": {"inner": "x", "depth": 2}}},
     "layout.nest.tumor.depth", ["unknown field", "probability", "rim"]),
])
def test_parse_errors_name_field_and_expectation(data, field, words):
    with pytest.raises(ConfigError) as e:
        parse_layout(data, file="recipe.yaml", field="layout")
    assert e.value.field == field, str(e.value)
    assert e.value.file == "recipe.yaml"
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_mask_colour_errors(id_mask):
    path = str(id_mask[0])
    for colors, words in [({"tumor": "red"}, ["#rrggbb", "red"]), ({"tumor": "#ff0000", "stroma": "#FF0000"},
                                                                    ["both use colour #ff0000"])]:
        with pytest.raises(ConfigError) as e:
            parse_layout({"kind": "mask", "path": path, "colors": colors}, file="recipe.yaml")
        assert e.value.field == "layout.colors"
        assert all(w in str(e.value) for w in words), str(e.value)


def test_parse_layout_rejects_non_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        parse_layout([1, 2], field="recipe.layout")  # type: ignore[arg-type]


def test_ranges_are_sampled_per_map():
    spec = parse_layout({"kind": "voronoi", "classes": {"tumor": 1, "stroma": 1}, "cells": [2, 60]})
    boundaries = {boundary_length(spec.generate(rng(i), (64, 64), IDS)) for i in range(8)}
    assert max(boundaries) > 2 * max(1, min(boundaries))
    fixed = parse_layout({"kind": "voronoi", "classes": {"tumor": 1}, "cells": 5})
    assert fixed.cells == 5 and parse_layout({"kind": "voronoi", "classes": FOUR, "cells": [3, 9]}).cells == (3, 9)


def test_large_maps_use_coarse_rendering_exactly():
    """The coarse-to-fine Voronoi renderer gives the same map as brute force."""
    from datagen.layouts.voronoi import nearest_seed

    spec = parse_layout({"kind": "voronoi", "classes": {"tumor": 1, "stroma": 1, "lymphocytes": 1},
                         "cells": 40})
    m = spec.generate(rng(5), (300, 260), IDS)
    r = rng(5)
    n = 40
    seeds = (r.random((n, 2)) * np.array([300, 260])).astype(np.float32)
    cls = r.choice(3, size=n, p=np.ones(3) / 3)
    ys, xs = np.indices((300, 260))
    brute = nearest_seed(ys.ravel().astype(np.float32), xs.ravel().astype(np.float32), seeds).reshape(300, 260)
    expected = np.array([3, 5, 7], np.uint8)[cls][brute]
    assert (m == expected).mean() > 0.9999

"""Fréchet distance (datagen.metrics) and a smoke run of benchmarks/realism.py."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datagen.metrics import extract_features, feature_statistics, frechet_distance, frechet_distance_from_stats

REPO = Path(__file__).resolve().parents[1]


def _gauss(n, d, seed, mean=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(mean, scale, size=(n, d))


def test_identical_sets_have_zero_distance():
    a = _gauss(200, 16, 0, scale=3.0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a.copy(), method="sqrtm") == pytest.approx(0.0, abs=1e-6)
    # rank-deficient covariance (fewer samples than dimensions), as with 1280-d features of a few hundred images
    b = _gauss(20, 64, 1)
    assert frechet_distance(b, b) == pytest.approx(0.0, abs=1e-8)
    # order of the samples does not matter
    assert frechet_distance(a, a[::-1]) == pytest.approx(0.0, abs=1e-8)


def test_symmetric():
    a, b = _gauss(300, 8, 0), _gauss(250, 8, 1, mean=0.5, scale=2.0)
    ab, ba = frechet_distance(a, b), frechet_distance(b, a)
    assert ab > 0
    assert ab == pytest.approx(ba, rel=1e-10)
    # also when both covariances are singular
    c, d = _gauss(10, 32, 2), _gauss(12, 32, 3, mean=1.0)
    assert frechet_distance(c, d) == pytest.approx(frechet_distance(d, c), rel=1e-9)


def test_mean_shift_closed_form():
    """Equal covariances: FD = ||mu_a - mu_b||^2 exactly, so it grows quadratically with the shift."""
    d = 10
    mu = np.zeros(d)
    cov = np.eye(d)
    for shift in (0.0, 0.5, 1.0, 3.0):
        delta = np.full(d, shift / np.sqrt(d))  # ||delta|| = shift
        assert frechet_distance_from_stats(mu, cov, mu + delta, cov) == pytest.approx(shift**2, abs=1e-10)
        assert frechet_distance_from_stats(mu, cov, mu + delta, cov, method="sqrtm") == pytest.approx(shift**2, abs=1e-8)
    # from samples: shifting one set by a vector adds exactly its squared norm (covariances unchanged)
    a = _gauss(500, d, 0)
    b = _gauss(500, d, 1)
    base = frechet_distance(a, b)
    prev = base
    for shift in (0.5, 1.0, 2.0, 4.0):
        delta = np.zeros(d)
        delta[0] = shift
        fd = frechet_distance(a, b + delta + (a.mean(0) - b.mean(0)))  # means aligned, then shifted by delta
        cov_only = frechet_distance(a, b + (a.mean(0) - b.mean(0)))
        assert fd == pytest.approx(cov_only + shift**2, rel=1e-9)
        assert fd > prev
        prev = fd
    # large samples of identity Gaussians: close to the closed form
    big_a = _gauss(20000, 4, 5)
    big_b = _gauss(20000, 4, 6) + np.array([2.0, 0, 0, 0])
    assert frechet_distance(big_a, big_b) == pytest.approx(4.0, rel=0.03)


def test_different_covariances():
    """Same mean, different covariance: positive, and equal to the closed form for diagonal covariances."""
    d = 6
    mu = np.zeros(d)
    s1 = np.diag(np.arange(1.0, d + 1))
    s2 = np.diag(np.full(d, 2.0))
    # diagonal: sum (sqrt(l1) - sqrt(l2))^2
    expected = float(np.sum((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2))
    assert expected > 0
    assert frechet_distance_from_stats(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance_from_stats(mu, s1, mu, s2, method="sqrtm") == pytest.approx(expected, rel=1e-8)
    # non-diagonal, from samples: both methods agree and the distance is positive
    rng = np.random.default_rng(0)
    m = rng.normal(size=(d, d))
    a = rng.normal(size=(400, d))
    b = rng.normal(size=(400, d)) @ m
    b += a.mean(0) - b.mean(0)
    fd = frechet_distance(a, b)
    assert fd > 0.1
    assert fd == pytest.approx(frechet_distance(a, b, method="sqrtm"), rel=1e-6)
    # few samples in many dimensions (singular covariances, as with 1280-d features of a few hundred
    # images): the sample-space formula used by default agrees with the covariance-space ones
    c, e = _gauss(20, 64, 7), _gauss(30, 64, 8, mean=0.2, scale=1.5)
    fd_auto = frechet_distance(c, e)
    assert fd_auto == pytest.approx(frechet_distance(c, e, method="eigh"), rel=1e-9)
    assert fd_auto == pytest.approx(frechet_distance(c, e, method="sqrtm"), rel=1e-5)
    # scaling one set grows the distance
    assert frechet_distance(a, 3 * a) > frechet_distance(a, 2 * a) > frechet_distance(a, 1.1 * a) > 0


def test_input_checks():
    a = _gauss(10, 4, 0)
    with pytest.raises(ValueError, match="widths differ"):
        frechet_distance(a, _gauss(10, 5, 1))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a, a[:1])
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(a, np.full((3, 4), np.nan))
    mu, cov = feature_statistics(a)
    assert mu.dtype == np.float64 and cov.shape == (4, 4)
    # torch input works and is computed in float64
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(a).float()) == pytest.approx(0, abs=1e-6)


class _MeanStd(torch.nn.Module):
    """A stand-in extractor: per-channel mean and std (6-d), with FeatureExtractor's pooled()."""

    layers = ("x",)

    def forward(self, x):
        return {"x": torch.cat([x, x.pow(2)], dim=1)}

    def pooled(self, x):
        f = self(x)["x"]
        return f.mean(dim=(2, 3))


def test_nearest_neighbour_distances_find_copies():
    from datagen.metrics import nearest_neighbour_distances

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 8))
    copies = ref[:10] + 1e-3
    fresh = rng.normal(size=(10, 8))
    d_copy, d_fresh = nearest_neighbour_distances(copies, ref), nearest_neighbour_distances(fresh, ref)
    assert d_copy.shape == (10,) and np.all(d_copy < 0.01) and np.all(d_fresh > 0.1)
    with pytest.raises(ValueError, match="feature sizes"):
        nearest_neighbour_distances(fresh[:, :4], ref)


def test_extract_features_batches_and_formats():
    ex = _MeanStd()
    imgs = torch.rand(10, 3, 16, 16) * 2 - 1
    whole = extract_features(imgs, ex, batch_size=4, input_size=None)
    assert whole.shape == (10, 6) and whole.dtype == np.float64
    in_batches = extract_features([imgs[:3], imgs[3:]], ex, batch_size=4, input_size=None)
    np.testing.assert_allclose(whole, in_batches, rtol=1e-6)
    u8 = ((imgs + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
    from_u8 = extract_features(u8, ex, input_size=None)
    np.testing.assert_allclose(from_u8[:, :3], whole[:, :3], atol=0.01)
    resized = extract_features(imgs, ex, input_size=32)
    np.testing.assert_allclose(resized[:, :3], whole[:, :3], atol=0.05)  # bilinear keeps the means


# ---- the benchmark script ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny random checkpoint and a training config over one small synthetic tissue image."""
    from datagen.models import DigipathUNet, UNetConfig, save_generator

    d = tmp_path_factory.mktemp("realism")
    torch.manual_seed(0)
    unet = DigipathUNet(UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, cond_dim=6, cond_channels=4, default_layer="dec.x4"))
    save_generator(d / "model", unet, torch.randn(10, 6), {"name": "tiny", "step": 0})
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :120]
    img = np.stack([200 + 30 * np.sin(xx / 5), 120 + 40 * np.cos(yy / 7), 190 + 0 * xx], -1)
    img = (img + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(img).save(d / "tissue.png")
    (d / "train.yaml").write_text(textwrap.dedent("""\
        data:
          - path: tissue.png
        crop: 32
        model: {channels: [8, 16, 16, 16]}
        """))
    return d


def test_benchmark_quick_smoke(tiny_setup):
    d = tiny_setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "realism.py"), "--model", str(d / "model"),
           "--train-config", str(d / "train.yaml"), "--quick", "--size", "32", "--threads", "1", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=d)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["num"] == 16 and r["size"] == 32 and r["seed"] == 0 and r["quick"] is True
    assert r["feature_layer"] == "head" and r["feature_dim"] == 1280 and r["feature_extractor"] == "efficientnet-lite0"
    for k in ("fd_generated_vs_real", "fd_real_vs_real", "fd_untrained_vs_real"):
        assert isinstance(r[k], float) and np.isfinite(r[k]) and r[k] >= 0, (k, r[k])
    # a random network's output is further from tissue than other tissue crops are
    assert r["fd_generated_vs_real"] > r["fd_real_vs_real"]
    assert r["fd_untrained_vs_real"] > r["fd_real_vs_real"]
    assert r["wall_time_s"] > 0 and r["model_meta"]["name"] == "tiny"
    # the ceiling is the same architecture freshly initialised from --seed: this random checkpoint was
    # made exactly that way (torch.manual_seed(0), same config), so its samples equal the ceiling's
    assert r["fd_generated_vs_real"] == pytest.approx(r["fd_untrained_vs_real"], rel=1e-9)
    assert r["relative"] == pytest.approx(1.0)
    assert r["nn_generated_to_real"] > r["nn_real_to_real"] > 0  # random output is no copy of a crop

    import importlib.util

    spec = importlib.util.spec_from_file_location("realism_bench", REPO / "benchmarks" / "realism.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = mod.format_report(r)
    assert "FD real vs real" in text and "floor" in text and "ceiling" in text and "head (1280-d)" in text
    g = r["glass"]
    for side in ("real_a", "generated"):
        assert 0 <= g[side]["glass_heavy_share"] <= 1 and 0 <= g[side]["mean_glass"] <= 1
    assert "images > 25% glass" in text
    # the measure itself: a white image is all glass, a tissue-coloured one none, a half-white one half
    import torch

    pink = torch.tensor([0.7, 0.2, 0.5]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    half = pink.clone()
    half[..., :4] = 1.0
    cov = mod.glass_coverage(torch.cat([torch.ones(1, 3, 8, 8), pink, half]))
    assert cov["mean_glass"] == pytest.approx(0.5) and cov["glass_heavy_share"] == pytest.approx(2 / 3)

    # deterministic: the same command gives the same distances
    again = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=d).stdout)
    for k in ("fd_generated_vs_real", "fd_real_vs_real", "fd_untrained_vs_real"):
        assert again[k] == pytest.approx(r[k], rel=1e-9)


def test_benchmark_bad_size_is_a_clear_error(tiny_setup):
    d = tiny_setup
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "realism.py"), "--model", str(d / "model"),
                           "--train-config", str(d / "train.yaml"), "--quick", "--size", "30"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--size" in proc.stderr and "multiple of 8" in proc.stderr


def test_window_of_scores_windows_of_larger_images(tiny_setup):
    """--window-of PX: each sample is drawn at PX and one seeded window of it is scored."""
    from datagen.models import load_generator
    from datagen.render import render_plain

    d = tiny_setup
    mod = _realism_module()
    gen = load_generator(str(d / "model"), "cpu")
    win = mod.generated(gen, 5, 16, seed=3, batch=2, window_of=48)
    assert win.shape == (5, 3, 16, 16)
    full = torch.from_numpy(render_plain(gen, list(range(5)), (48, 48), 3)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    found = []
    for i in range(5):  # each window is a crop of its own sample's larger image
        hits = [(y, x) for y in range(33) for x in range(33) if torch.equal(full[i, :, y:y + 16, x:x + 16], win[i])]
        assert hits, i
        found.append(hits[0])
    assert len(set(found)) > 1  # placed per sample, not one fixed window
    assert torch.equal(mod.generated(gen, 5, 16, seed=3, batch=5, window_of=48), win)  # batch-independent
    for bad, msg in (("16", "larger than --size 32"), ("44", "--window-of: .*multiple of 8")):
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "realism.py"), "--model", str(d / "model"),
                               "--train-config", str(d / "train.yaml"), "--quick", "--size", "32", "--window-of", bad],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert re.search(msg, proc.stderr), proc.stderr


def test_realism_second_network_lite1():
    """The second realism network (the projected D's backbone) loads offline and reads other features."""
    import torch

    from datagen.metrics import realism_extractor

    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        f0 = realism_extractor(device="cpu")(x)["head"]
        f1 = realism_extractor(device="cpu", variant="efficientnet-lite1")(x)["head"]
    assert f0.shape == f1.shape and f1.shape[1] == 1280
    assert not torch.allclose(f0, f1)
    with pytest.raises(ValueError):
        realism_extractor(variant="efficientnet-lite9")


def _realism_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("realism_bench", REPO / "benchmarks" / "realism.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_conditioning_fidelity_tells_a_generator_that_follows_its_vector_from_one_that_ignores_it():
    """``follow`` is 0 for a generator that draws exactly the crop its vector came from (and then
    glass_r is 1), and exactly 1 for one that draws the same image whatever the vector."""
    from datagen.features import EfficientNetLite0, resize_for_features
    from datagen.models import DigipathGenerator, DigipathUNet
    from datagen.models.unet import UNetConfig

    mod = _realism_module()
    torch.manual_seed(0)
    pink = torch.tensor([0.6, -0.4, 0.3]).view(1, 3, 1, 1)
    real = (pink + 0.2 * torch.randn(6, 3, 64, 64)).clamp(-1, 1)
    for k in range(3):  # three crops with glass, in different amounts
        real[k, :, :, : 16 * (k + 1)] = 1.0
    real = ((real + 1) * 127.5).round() / 127.5 - 1  # uint8-quantised, as real crops are
    with torch.no_grad():
        vectors = EfficientNetLite0().eval().pooled(resize_for_features(real))
    module = DigipathUNet(UNetConfig(channels=(8, 16, 16, 16), noise_channels=4, cond_dim=vectors.shape[1], cond_channels=4,
                                     default_layer="dec.x4"))

    class Oracle(DigipathGenerator):
        def forward(self, inputs):  # the real crop whose vector is closest
            return real[torch.cdist(inputs["cond"], vectors, p=1).argmin(1)]

    class Ignores(DigipathGenerator):
        def forward(self, inputs):
            return real[:1].expand(len(inputs["cond"]), -1, -1, -1)

    follows = mod.conditioning_fidelity(Oracle(module, vectors), real, seed=0, batch=4)
    assert follows["follow"] == pytest.approx(0.0, abs=1e-3) and follows["glass_r"] == pytest.approx(1.0)
    assert follows["mean_glass_generated"] == pytest.approx(follows["mean_glass_real"]) and follows["mean_glass_real"] > 0.1
    # painted glass (the tiny UNet's, which the oracle bypasses): a share, from the glassiest crops
    assert 0 <= follows["paint_glass"] <= 1 and 0 <= follows["paint_tissue"] <= 1
    assert follows["paint_glass_crops"] > follows["mean_glass_real"]
    assert follows["paint_vectors_distinct"] is None  # the oracle never runs the paint layer
    ignores = mod.conditioning_fidelity(Ignores(module, vectors), real, seed=0, batch=4)
    assert ignores["follow"] == pytest.approx(1.0, rel=1e-5)
    # paint-layer collapse: the tiny UNet gives each crop its own paint vector, until its paint
    # layer is made to draw one vector whatever the crop and the noise
    plain = mod.conditioning_fidelity(DigipathGenerator(module, vectors), real, seed=0, batch=4)
    assert plain["paint_vectors_distinct"] == 1.0
    with torch.no_grad():
        for conv in (module.dec["x4"].conv1, module.dec["x4"].conv2):
            conv.weight.zero_(); conv.bias.fill_(0.5)
    collapsed = mod.conditioning_fidelity(DigipathGenerator(module, vectors), real, seed=0, batch=4)
    assert collapsed["paint_vectors_distinct"] == pytest.approx(1 / len(real))
    unconditional = DigipathGenerator(DigipathUNet(UNetConfig(channels=(8, 16, 16, 16), noise_channels=4)))
    assert mod.conditioning_fidelity(unconditional, real, seed=0, batch=4) is None


def test_painted_realism_benchmark(tiny_setup, tmp_path):
    """benchmarks/realism_painted.py scores a recipe's painted images against the real crops and
    counts each class's distinct vectors: a class of three copies of one vector is one."""
    from conftest import make_tiny_assets

    recipe = make_tiny_assets(tmp_path, size=32, cells="[2, 4]")
    copies = tmp_path / "copies.yaml"
    copies.write_text(recipe.read_text().replace("vectors: [0, 1, 2]", "vectors: [3, 3, 3]"))
    cmd = [sys.executable, str(REPO / "benchmarks" / "realism_painted.py"), str(recipe), str(copies),
           "--reference", str(tiny_setup / "train.yaml"), "--num", "8", "--threads", "1", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["num"] == 8 and r["size"] == 32 and np.isfinite(r["fd_real_vs_real"])
    first, second = r["rows"]
    assert first["distinct_vectors"] == {"tumor": 3, "stroma": 2}
    assert second["distinct_vectors"] == {"tumor": 1, "stroma": 2}
    for row in r["rows"]:  # a random network paints no tissue
        assert row["fd_painted_vs_real"] > r["fd_real_vs_real"] and 0 <= row["glass"] <= 1
    bad = subprocess.run(cmd[:2] + [str(tmp_path / "missing.yaml")] + cmd[4:], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "missing.yaml" in bad.stderr
    (tmp_path / "big").mkdir()
    other_size = make_tiny_assets(tmp_path / "big", size=64, cells="[2, 4]")  # rejected before it is rendered
    mixed = subprocess.run(cmd[:3] + [str(other_size)] + cmd[4:], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120, cwd=tmp_path)
    assert mixed.returncode == 2 and "Traceback" not in mixed.stderr and "differs from the first recipe's 32 px" in mixed.stderr

"""A real (tiny) GAN training run on CPU, then a resume that continues from the saved step."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from datagen.errors import ConfigError, DatagenError
from datagen.models import load_checkpoint
from datagen.train import TrainConfig, load_train_config, train
from datagen.train.augment import ZOOM_MIN, diff_augment
from datagen.train.data import CropSampler, background_fraction, background_fraction_t


@pytest.fixture
def tissue_png(tmp_path):
    """A small pink/purple blob image with a glass (white) half, like a slide edge."""
    rng = np.random.default_rng(0)
    img = np.full((96, 160, 3), 245, np.uint8)
    yy, xx = np.mgrid[:96, :96]
    tissue = np.stack([200 + 30 * np.sin(xx / 5), 120 + 40 * np.cos(yy / 7), 190 + 0 * xx], -1)
    for _ in range(30):
        cy, cx = rng.integers(0, 96, 2)
        tissue[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = (90, 40, 140)
    img[:, :96] = tissue.clip(0, 255).astype(np.uint8)
    path = tmp_path / "tissue.png"
    Image.fromarray(img).save(path)
    return path


def _cfg(path, **kw):
    base = dict(data=[{"path": str(path)}], crop=32, batch=4, steps=20, checkpoint_every=10, sample_every=10,
                log_every=5, cond_bank=16, model={"channels": [8, 16, 16, 16], "noise_channels": 4,
                                                  "cond_channels": 4, "disc_channels": [8, 16, 16]})
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_crop_sampler_skips_glass(tissue_png):
    s = CropSampler([(tissue_png, 1.0)], 32, max_background=0.2, seed=0)
    crops = s.sample(16)
    assert crops.shape == (16, 3, 32, 32)
    for c in crops:
        u8 = ((c.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        assert background_fraction(u8) <= 0.2



def test_background_fraction_on_tensors_matches_the_samplers_test():
    """The training log's glass share (torch, any device) counts the pixels the sampler's numpy test counts."""
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    u8[0, :12] = 235                       # glass (bright, grey)
    u8[1, :, :8] = (230, 215, 240)         # bright but tinted (range 25): not glass
    u8[2, 6:] = 10                         # scanner border
    u8[3, :, :] = (201, 205, 225)          # range 24, min 201: glass everywhere
    images = torch.from_numpy(u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    got = background_fraction_t(images)
    want = torch.tensor([background_fraction(im) for im in u8], dtype=torch.float32)
    assert torch.allclose(got, want, atol=1e-6)
    assert got[3] == 1.0 and got[0] >= 0.5 and got[1] < 0.05


def test_train_then_resume_continues(tmp_path, tissue_png):
    out = tmp_path / "run"
    ckpt = train(_cfg(tissue_png, steps=20), out, progress=False)
    gen = load_checkpoint(ckpt)
    assert gen.module.config.cond_dim > 0 and gen.conditioning is not None
    state = torch.load(out / "train_state.pt", weights_only=False)
    assert state["step"] == 20
    g_before = {k: v.clone() for k, v in state["G"].items()}
    assert (out / "samples" / "step-000000.png").exists() and (out / "samples" / "step-000020.png").exists()
    steps_logged = [json.loads(l)["step"] for l in (out / "log.jsonl").read_text().splitlines()]
    assert steps_logged == [5, 10, 15, 20]
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert last["paint"] > 0 and last["std"] > 0  # the paintability monitor is logged
    assert 0 <= last["glass"] <= 1 and 0 <= last["glass_real"] <= 1  # so is the glass share (generated, real)
    assert 0 <= last["paint_tissue"] <= 1 and 0 <= last["paint_glass"] <= 1  # and whether glass can be painted

    with pytest.raises(DatagenError, match="resume=True"):
        train(_cfg(tissue_png, steps=30), out, progress=False)

    train(_cfg(tissue_png, steps=30), out, resume=True, progress=False)
    state2 = torch.load(out / "train_state.pt", weights_only=False)
    assert state2["step"] == 30 and state2["nimg"] == 30 * 4
    steps_logged = [json.loads(l)["step"] for l in (out / "log.jsonl").read_text().splitlines()]
    assert steps_logged == [5, 10, 15, 20, 25, 30]  # continued, not restarted
    assert any(not torch.equal(g_before[k], state2["G"][k]) for k in g_before)
    meta = json.loads((out / "checkpoint" / "config.json").read_text())["meta"]
    assert meta["step"] == 30


def test_resume_takes_the_configs_learning_rates(tmp_path, tissue_png, capsys):
    """Adam's load_state_dict restores the snapshot's lr: a changed lr on --resume must still apply."""
    out = tmp_path / "run"
    train(_cfg(tissue_png, steps=2, checkpoint_every=2, sample_every=100), out, progress=False)
    before = torch.load(out / "train_state.pt", weights_only=False)
    train(_cfg(tissue_png, steps=4, checkpoint_every=2, sample_every=100, lr_g=1e-3, lr_d=5e-4), out, resume=True, progress=False)
    after = torch.load(out / "train_state.pt", weights_only=False)
    for opt, ratio in (("opt_g", 1e-3 / 2.5e-3), ("opt_d", 5e-4 / 2.5e-3)):
        old = [g["lr"] for g in before[opt]["param_groups"]]
        new = [g["lr"] for g in after[opt]["param_groups"]]
        assert len(old) == len(new) > 1  # equalised lr: one group per layer, each scaled
        assert new == pytest.approx([lr * ratio for lr in old])
    assert after["opt_g"]["state"]  # the moments were carried over, not reset
    assert "G's learning rate changes from the snapshot's to the config's" in capsys.readouterr().out


def test_unconditional_training(tmp_path, tissue_png):
    ckpt = train(_cfg(tissue_png, steps=3, feature_extractor="none"), tmp_path / "u", progress=False)
    assert load_checkpoint(ckpt).module.config.cond_dim == 0


def test_train_config_errors(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("data: [{path: x}]\ncrop: 30\n")
    with pytest.raises(ConfigError, match=r"t.yaml: crop: must be a multiple of the generator stride 32"):
        load_train_config(p)
    p.write_text("data: [{path: x}]\nbatch: many\n")
    with pytest.raises(ConfigError, match=r"t.yaml: batch: .*integer"):
        load_train_config(p)
    p.write_text("data: [{path: x}]\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"learning_rate: unknown field"):
        load_train_config(p)
    p.write_text("data: [{path: x}]\ndiffaugment: color,zoomm\n")
    with pytest.raises(ConfigError, match=r"t.yaml: diffaugment: unknown DiffAugment op\(s\) \['zoomm'\]; expected .*zoom"):
        load_train_config(p)


def test_zoom_magnifies_half_the_images_and_passes_gradients():
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(64, 3, 64, 64).clone().requires_grad_(True)
    out = diff_augment(ramp, "zoom", torch.Generator().manual_seed(0))
    assert out.shape == ramp.shape
    span = (out[:, 0, 0, -1] - out[:, 0, 0, 0]).detach()  # 2 * window side / image side
    whole = span > 1.9
    assert 16 < int(whole.sum()) < 48  # about half pass whole (ZOOM_P)
    assert float(span[~whole].min()) >= 2 * ZOOM_MIN - 0.05  # never a window smaller than ZOOM_MIN
    assert float(span[~whole].max()) < 1.9
    # each zoomed window lies inside the image: its values stay within the ramp's
    assert float(out.detach().min()) >= -1 - 1e-5 and float(out.detach().max()) <= 1 + 1e-5
    out.sum().backward()
    assert float(ramp.grad.abs().sum()) > 0
    again = diff_augment(ramp.detach(), "zoom", torch.Generator().manual_seed(0))
    assert torch.equal(again, out.detach())  # the generator alone sets the windows
    with pytest.raises(ValueError, match=r"unknown DiffAugment op\(s\) \['zoomm'\]"):
        diff_augment(ramp, "zoomm")


def test_missing_data_is_clear(tmp_path):
    with pytest.raises(DatagenError, match="no such file or folder"):
        train(_cfg(tmp_path / "nope.png", steps=1), tmp_path / "r", progress=False)


def test_equalized_param_groups_scale_lr_by_fan_in():
    from datagen.train.loop import param_groups

    m = torch.nn.Sequential(torch.nn.Conv2d(8, 4, 3), torch.nn.Linear(50, 2))
    groups = param_groups(m, 0.01, equalized=True)
    lr = {id(g["params"][0]): g["lr"] for g in groups}
    assert lr[id(m[0].weight)] == pytest.approx(0.01 / (8 * 9) ** 0.5)
    assert lr[id(m[1].weight)] == pytest.approx(0.01 / 50 ** 0.5)
    assert lr[id(m[0].bias)] == lr[id(m[1].bias)] == 0.01
    assert sum(len(g["params"]) for g in groups) == 4
    (plain,) = param_groups(m, 0.01, equalized=False)
    assert plain["lr"] == 0.01 and len(plain["params"]) == 4


class _GlassToy(torch.nn.Module):
    """Draws glass where its one-channel ``layer`` (the sign of cond[:, 0]) is positive, or,
    ``from_noise``, where the noise is, whatever the layer says."""

    def __init__(self, from_noise: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Identity()
        self.from_noise = from_noise

    def forward(self, noise, cond):
        a = self.layer(cond[:, :1, None, None].expand(-1, 1, *noise.shape[-2:]).clone())
        where = noise[:, :1] > 0 if self.from_noise else a > 0
        glass = torch.tensor([0.9, 0.9, 0.9])[None, :, None, None]       # uint8 242, grey: glass
        tissue = torch.tensor([0.2, -0.5, 0.3])[None, :, None, None]     # pink-purple
        return torch.where(where, glass, tissue)


def test_paint_glass_tells_painted_glass_from_noise_glass():
    from datagen.train.monitor import paint_glass

    z = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    scene, tissue_c = torch.full((4, 2), -1.0), -torch.ones(4, 2)
    glass_c = torch.tensor([[-1.0, 0], [-1, 0], [1, 0], [-1, 0]])  # one of the candidates is glass
    m = paint_glass(_GlassToy(), z, scene, glass_c, tissue_c, "layer")
    assert m == {"paint_glass": 1.0, "paint_tissue": 0.0}  # the vector decides: glass is paintable
    m = paint_glass(_GlassToy(from_noise=True), z, scene, glass_c, tissue_c, "layer")
    assert m["paint_glass"] == m["paint_tissue"] and 0.3 < m["paint_glass"] < 0.7  # the noise decides: it is not


def test_paint_influence_sees_a_bypassed_layer():
    from datagen.models import DigipathUNet, UNetConfig
    from datagen.train.monitor import paint_influence

    torch.manual_seed(0)
    z = torch.randn(3, 4, 32, 32)
    # bottleneck design: everything passes the paint layer, so replacing it changes the image
    g = DigipathUNet(UNetConfig(channels=(8, 8, 8), noise_channels=4, skip_min_stride=2, default_layer="dec.x2")).eval()
    m = paint_influence(g, z, None, "dec.x2")
    assert m["influence"] > 1e-3 and m["spatial_std"] > 0 and m["batch_std"] > 0

    class Bypass(torch.nn.Module):  # computes the layer but never uses it
        def __init__(self) -> None:
            super().__init__()
            self.unused = torch.nn.Conv2d(4, 4, 1)
            self.out = torch.nn.Conv2d(4, 3, 1)

        def forward(self, z, cond=None):
            self.unused(z)
            return self.out(z)

    assert paint_influence(Bypass(), z, None, "unused")["influence"] == 0.0
    with pytest.raises(ValueError, match="two samples"):
        paint_influence(g, z[:1], None, "dec.x2")

"""The Projected-GAN discriminator option of ``datagen train`` (tiny sizes, CPU)."""

import json

import pytest
import torch

from datagen.errors import ConfigError
from datagen.models import load_checkpoint
from datagen.train import TrainConfig, load_train_config, train
from datagen.train.loop import build_discriminator, compact_state, discriminator_optimizer
from datagen.train.losses import d_hinge_loss, d_logistic_loss, g_hinge_loss, g_nonsaturating_loss

from test_train import _cfg, tissue_png  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def proj_d():
    torch.manual_seed(0)
    return TrainConfig.model_validate({"data": [{"path": "x.png"}], "discriminator": "projected", "crop": 64})


def test_projected_d_shapes_grads_and_frozen_net(proj_d):
    D = build_discriminator(proj_d)
    assert D.features.channels == (24, 40, 112, 320)  # EfficientNet-Lite1 at strides 4, 8, 16, 32
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = D(x)
    assert len(out) == 4
    for o in out:
        assert o.ndim == 2 and o.shape[0] == 2 and o.shape[1] >= 1
    d_hinge_loss(out, [o.detach() * 0 for o in out]).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G gets a gradient through the frozen net
    assert all(p.grad is None for p in D.features.parameters())
    assert all(not p.requires_grad for p in D.features.parameters())
    assert all(p.grad is not None for p in D.heads.parameters())
    # the frozen net and the fixed random mixing are neither trained nor saved
    frozen = {id(p) for p in D.features.parameters()}
    assert not frozen & {id(p) for p in D.parameters()}
    opt = discriminator_optimizer(proj_d, D)
    assert not frozen & {id(p) for g in opt.param_groups for p in g["params"]}
    keys = list(D.state_dict())
    assert keys and all(k.startswith("heads.") for k in keys)
    # eval stays eval; .train() does not switch the frozen BatchNorms to batch statistics
    D.train()
    assert not D.features.training


def test_projected_mixing_is_fixed_by_seed(proj_d):
    a, b = build_discriminator(proj_d), build_discriminator(proj_d)
    for (n, x), (_, y) in zip(a.project.named_buffers(), b.project.named_buffers()):
        assert torch.equal(x, y), n
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    a.eval(); b.eval()
    with torch.no_grad():
        for u, v in zip(a(x), b(x)):
            torch.testing.assert_close(u, v)


def test_losses_sum_over_heads():
    r, f = [torch.ones(2, 4), torch.ones(2, 1)], [-torch.ones(2, 4), -torch.ones(2, 1)]
    assert d_hinge_loss(r, f).item() == 0.0
    assert g_hinge_loss(f).item() == pytest.approx(2.0)
    one = d_logistic_loss(r[0], f[0])
    assert d_logistic_loss(r, f).item() == pytest.approx(2 * one.item())
    assert g_nonsaturating_loss(torch.zeros(3)).item() == pytest.approx(0.6931, abs=1e-4)


def test_config_validation(tmp_path):
    base = {"data": [{"path": "x.png"}]}
    assert TrainConfig.model_validate(base).discriminator == "resnet"  # existing configs unchanged
    cfg = TrainConfig.model_validate({**base, "discriminator": "projected", "crop": 64})
    assert cfg.projected.backbone == "efficientnet-lite1" and cfg.projected.loss == "hinge"
    y = tmp_path / "t.yaml"
    y.write_text("data: [{path: x.png}]\ndiscriminator: stylegan\n")
    with pytest.raises(ConfigError, match="discriminator"):
        load_train_config(y)
    y.write_text("data: [{path: x.png}]\ndiscriminator: projected\nprojected: {loss: wgan}\n")
    with pytest.raises(ConfigError, match="loss"):
        load_train_config(y)
    y.write_text("data: [{path: x.png}]\ndiscriminator: projected\ncrop: 16\nmodel: {channels: [8, 16]}\n")
    with pytest.raises(ConfigError, match="32"):
        load_train_config(y)
    y.write_text("data: [{path: x.png}]\nmax_minutes: 0\n")
    with pytest.raises(ConfigError, match="max_minutes"):
        load_train_config(y)


def test_projected_training_smoke_and_resume(tmp_path, tissue_png, capsys):  # noqa: F811
    out = tmp_path / "run"
    ckpt = train(_cfg(tissue_png, steps=2, discriminator="projected", log_every=1), out, progress=False)
    assert load_checkpoint(ckpt).module.config.cond_dim > 0
    st = torch.load(out / "train_state.pt", weights_only=False)
    assert st["step"] == 2 and st["D_kind"] == "projected"
    assert all(k.startswith("heads.") for k in st["D"])  # trainable D only, no frozen net
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and "r1" not in log[-1] and log[-1]["paint"] >= 0
    d_before = {k: v.clone() for k, v in st["D"].items()}

    train(_cfg(tissue_png, steps=3, discriminator="projected", log_every=1), out, resume=True, progress=False)
    assert "FRESHLY" not in capsys.readouterr().out
    st2 = torch.load(out / "train_state.pt", weights_only=False)
    assert st2["step"] == 3
    assert any(not torch.equal(d_before[k], st2["D"][k]) for k in d_before)

    small = compact_state(out / "train_state.pt", tmp_path / "snap" / "train_state.pt", half=True)
    s = torch.load(small, weights_only=False)
    assert "opt_d" not in s and s["G"][next(iter(s["G"]))].dtype == torch.float16


def test_resume_resnet_snapshot_with_projected_d(tmp_path, tissue_png, capsys):  # noqa: F811
    out = tmp_path / "run"
    train(_cfg(tissue_png, steps=2), out, progress=False)  # the committed snapshot's kind: resnet D
    compact_state(out / "train_state.pt", out / "train_state.pt")
    g = torch.load(out / "train_state.pt", weights_only=False)["G_ema"]
    capsys.readouterr()
    train(_cfg(tissue_png, steps=3, discriminator="projected"), out, resume=True, progress=False)
    msg = capsys.readouterr().out
    assert "'resnet'" in msg and "FRESHLY INITIALISED" in msg
    st = torch.load(out / "train_state.pt", weights_only=False)
    assert st["step"] == 3 and st["D_kind"] == "projected"
    assert any(not torch.equal(g[k], st["G_ema"][k]) for k in g)  # G_ema resumed and moved on


def test_max_minutes_stops_with_a_checkpoint(tmp_path, tissue_png):  # noqa: F811
    out = tmp_path / "run"
    train(_cfg(tissue_png, steps=1000, max_minutes=1e-5), out, progress=False)
    st = torch.load(out / "train_state.pt", weights_only=False)
    assert st["step"] < 1000
    assert (out / "checkpoint" / "config.json").exists()


@pytest.mark.parametrize("disc", ["projected", "resnet"])
def test_bf16_precision_runs_forward_passes_in_bfloat16(tmp_path, tissue_png, disc):  # noqa: F811
    """precision: bf16 puts the convolutions of G and D under bfloat16 autocast; the weights, the
    snapshot and the losses stay float32 and finite (R1 of the resnet D included)."""
    seen: set[torch.dtype] = set()

    def hook(module, args, out):
        if isinstance(module, torch.nn.Conv2d) and torch.is_tensor(out):
            seen.add(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        out = tmp_path / "run"
        train(_cfg(tissue_png, steps=2, discriminator=disc, precision="bf16", log_every=1, r1_every=1), out,
              progress=False)
    finally:
        handle.remove()
    assert torch.bfloat16 in seen
    st = torch.load(out / "train_state.pt", weights_only=False)
    assert all(v.dtype == torch.float32 for v in st["G"].values() if v.is_floating_point())
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([r["d"], r["g"]])).all() for r in log)
    if disc == "resnet":
        assert "r1" in log[-1] and log[-1]["r1"] == log[-1]["r1"]  # R1 ran (in float32), not NaN


def test_fp32_precision_has_no_bfloat16(tmp_path, tissue_png):  # noqa: F811
    seen: set[torch.dtype] = set()
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, a, o: seen.add(o.dtype) if isinstance(m, torch.nn.Conv2d) and torch.is_tensor(o) else None)
    try:
        train(_cfg(tissue_png, steps=1, discriminator="projected"), tmp_path / "run", progress=False)
    finally:
        handle.remove()
    assert seen == {torch.float32}


def test_bf16_on_a_cpu_without_native_bfloat16_says_so(tmp_path, tissue_png, monkeypatch, capsys):  # noqa: F811
    import datagen.train.loop as loop

    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    train(_cfg(tissue_png, steps=1, precision="bf16"), tmp_path / "run", progress=False)
    assert "emulated" in capsys.readouterr().out
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    train(_cfg(tissue_png, steps=1, precision="bf16"), tmp_path / "run2", progress=False)
    assert "emulated" not in capsys.readouterr().out

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


def test_conditional_heads_start_at_zero_and_read_the_vector(proj_d):
    """Projection conditioning: a fresh conditional D scores exactly like the unconditional one with
    the same head weights (zero embeddings), and once the embeddings move, the vector changes the logits."""
    torch.manual_seed(0)
    cfg = proj_d.model_copy(update={"projected": proj_d.projected.model_copy(update={"conditional": True})})
    D = build_discriminator(cfg, cond_dim=12)
    U = build_discriminator(proj_d)
    missing, unexpected = D.load_state_dict(U.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == sorted([f"heads.{i}.embed.weight" for i in range(4)] + ["cond_mean", "cond_std"])
    bank = torch.randn(64, 12) * 3 + 1
    D.set_condition_stats(bank)
    D.eval(); U.eval()
    x, c = torch.randn(2, 3, 64, 64), bank[:2]
    with torch.no_grad():
        for u, v in zip(U(x), D(x, c)):
            torch.testing.assert_close(u, v)
        with pytest.raises(ValueError, match="conditional"):
            D(x)
        for h in D.heads:
            h.embed.weight.normal_()
        a, b = D(x, c), D(x, c.flip(0))
    assert all(not torch.allclose(u, v) for u, v in zip(a, b))
    out = D(x, c)
    g_hinge_loss(out).backward()
    assert all(h.embed.weight.grad is not None and h.embed.weight.grad.abs().sum() > 0 for h in D.heads)
    assert "cond_mean" in D.state_dict() and torch.allclose(D.cond_mean, bank.mean(0))


def test_conditional_needs_a_feature_extractor():
    with pytest.raises(ConfigError, match="projected.conditional"):
        TrainConfig.model_validate({"data": [{"path": "x.png"}], "discriminator": "projected", "crop": 64,
                                    "feature_extractor": "none", "projected": {"conditional": True}}).check()


def test_conditional_resume_from_an_unconditional_snapshot(tmp_path, tissue_png, capsys):  # noqa: F811
    """The committed snapshot's D is unconditional: switching projected.conditional on resumes its heads
    (the embeddings start at zero, Adam's D moments restart) and trains on."""
    out = tmp_path / "run"
    train(_cfg(tissue_png, steps=2, discriminator="projected"), out, progress=False)
    heads = torch.load(out / "train_state.pt", weights_only=False)["D"]
    capsys.readouterr()
    train(_cfg(tissue_png, steps=4, discriminator="projected", projected={"conditional": True}, log_every=1), out,
          resume=True, progress=False)
    assert "conditional embeddings start at zero" in capsys.readouterr().out
    st = torch.load(out / "train_state.pt", weights_only=False)
    assert st["step"] == 4 and {k for k in st["D"] if "embed" in k} and "cond_std" in st["D"]
    assert any(st["D"][k].abs().sum() > 0 for k in st["D"] if k.endswith("embed.weight"))  # they learned
    assert any(not torch.equal(heads[k], st["D"][k]) for k in heads)
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([r["d"], r["g"]])).all() for r in log)
    # resuming the conditional snapshot is silent about it
    train(_cfg(tissue_png, steps=5, discriminator="projected", projected={"conditional": True}), out,
          resume=True, progress=False)
    assert "start at zero" not in capsys.readouterr().out
    # and switching conditioning off again keeps the heads, drops the embeddings, says so
    train(_cfg(tissue_png, steps=6, discriminator="projected"), out, resume=True, progress=False)
    assert "embeddings are dropped" in capsys.readouterr().out
    st = torch.load(out / "train_state.pt", weights_only=False)
    assert st["step"] == 6 and not any("embed" in k or k.startswith("cond_") for k in st["D"])


def test_feature_bank_records_its_crop_and_is_recomputed_for_another(tmp_path, tissue_png, capsys):  # noqa: F811
    """A conditioning bank computed at one crop size is not reused at another: pooled features depend
    on the crop's extent (a legacy bank, a bare tensor, is recomputed too)."""
    out = tmp_path / "run"
    train(_cfg(tissue_png, steps=1), out, progress=False)
    saved = torch.load(out / "feature_bank.pt", weights_only=True)
    crop = _cfg(tissue_png, steps=1).crop
    assert saved["crop"] == crop and saved["features"].ndim == 2
    torch.save(saved["features"], out / "feature_bank.pt")  # as older runs wrote it
    capsys.readouterr()
    train(_cfg(tissue_png, steps=2), out, resume=True, progress=False)
    assert "unrecorded size" in capsys.readouterr().out
    assert torch.load(out / "feature_bank.pt", weights_only=True)["crop"] == crop
    train(_cfg(tissue_png, steps=3), out, resume=True, progress=False)
    assert "recomputing" not in capsys.readouterr().out



def test_soft_glass_share_follows_the_samplers_test_and_has_gradients():
    from datagen.train.data import background_fraction_t
    from datagen.train.losses import glass_consistency, soft_background_fraction

    rng = torch.Generator().manual_seed(0)
    tissue = torch.rand((4, 3, 32, 32), generator=rng) * 1.2 - 0.9      # mostly below the glass brightness
    glass = tissue.clone()
    glass[:, :, :16] = 0.85 + 0.02 * torch.rand((4, 1, 16, 32), generator=rng)  # bright, grey: glass
    images = torch.cat([tissue, glass])
    hard, soft = background_fraction_t(images), soft_background_fraction(images)
    assert torch.allclose(soft, hard, atol=0.06)
    assert soft[4:].min() > 0.45 and soft[:4].max() < 0.1
    x = images.clone().requires_grad_(True)
    glass_consistency(x, torch.full((8,), 0.5)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_glass_weight_needs_the_bank_and_trains_against_each_vectors_crop(tmp_path, tissue_png, capsys):  # noqa: F811
    with pytest.raises(ConfigError, match="glass_weight"):
        TrainConfig.model_validate({"data": [{"path": "x.png"}], "glass_weight": 1.0, "feature_extractor": "none"}).check()
    out = tmp_path / "run"
    train(_cfg(tissue_png, steps=1), out, progress=False)
    saved = torch.load(out / "feature_bank.pt", weights_only=True)
    assert saved["glass"].shape == (len(saved["features"]),) and 0 <= saved["glass"].min() <= saved["glass"].max() <= 1
    torch.save({"features": saved["features"], "crop": saved["crop"]}, out / "feature_bank.pt")  # a bank without glass
    capsys.readouterr()
    train(_cfg(tissue_png, steps=2, glass_weight=1.0, log_every=1), out, resume=True, progress=False)
    assert "no glass shares" in capsys.readouterr().out
    again = torch.load(out / "feature_bank.pt", weights_only=True)
    assert torch.equal(again["features"], saved["features"])  # the same crops: the sampler starts from its seed
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and 0 <= log[-1]["glass_l1"] <= 1
    train(_cfg(tissue_png, steps=3), out, resume=True, progress=False)  # glass_weight 0: the bank as it is
    assert "recomputing" not in capsys.readouterr().out

def test_nearest_bank_vectors_pairs_real_crops_with_a_neighbour_in_standardised_units():
    from datagen.train.loop import nearest_bank_vectors

    bank = torch.tensor([[0.0, 0.0], [10.0, 1.0], [0.0, 3.0]])
    feats = torch.tensor([[9.0, 0.9], [1.0, 2.0]])
    assert torch.equal(nearest_bank_vectors(feats, bank, torch.ones(2)), bank[[1, 2]])
    # with dimension 0 scaled down 100x, dimension 1 decides: [6, 0] is nearest [0, 0], not [10, 1]
    assert torch.equal(nearest_bank_vectors(torch.tensor([[6.0, 0.0]]), bank, torch.tensor([100.0, 1.0])), bank[[0]])
    assert torch.equal(nearest_bank_vectors(torch.tensor([[6.0, 0.0]]), bank, torch.ones(2)), bank[[1]])

"""The training loop: alternating D and G steps, R1, EMA, conditioning, checkpoints, resume.

Output directory:

    train.yaml           the validated config (resume reads it back)
    train_state.pt       step, G, G_ema, D (trainable weights only), optimisers, RNG states (for resume only)
    checkpoint/          the EMA generator as a loadable checkpoint (safetensors + config.json)
    samples/             sample grids from fixed noise, step-NNNNNN.png
    log.jsonl            losses every ``log_every`` steps

Checkpoints are written atomically (temp file + rename), so a run killed at any
point resumes from the last complete checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from ..errors import DatagenError, UsageError, arg
from ..features import EfficientNetLite0, FeatureExtractor, resize_for_features
from ..fsutil import atomic_path, atomic_write_text
from ..models.checkpoint import save_generator
from ..models.discriminator import Discriminator
from ..models.registry import resolve_device
from ..models.unet import DigipathUNet, UNetConfig
from ..render import autocast_for
from .augment import diff_augment, dihedral
from .config import TrainConfig
from .data import CropSampler, background_fraction_t
from .monitor import paint_glass, paint_influence
from .losses import GAN_LOSSES, conditioning_consistency, glass_consistency, r1_penalty

STATE_NAME = "train_state.pt"
CONFIG_NAME = "train.yaml"


def build_generator(cfg: TrainConfig, cond_dim: int) -> DigipathUNet:
    m = cfg.model
    ucfg = UNetConfig(channels=tuple(m.channels), noise_channels=m.noise_channels, cond_dim=cond_dim,
                      cond_channels=m.cond_channels, padding_mode=m.padding_mode, skip_min_stride=m.skip_min_stride,
                      noise_injection=m.noise_injection, decoder_bias=m.decoder_bias, norm=m.norm,
                      default_layer=m.default_layer or f"dec.x{2 ** (len(m.channels) - 2)}")
    return DigipathUNet(ucfg)


def build_discriminator(cfg: TrainConfig, cond_dim: int = 0) -> torch.nn.Module:
    """The discriminator the config asks for (``discriminator: resnet | projected``).

    Its ``parameters()`` and ``state_dict()`` are the trainable weights only: the projected
    discriminator keeps its frozen pretrained network outside both. ``cond_dim`` is used
    by a conditional projected D (``projected.conditional``).
    """
    if cfg.discriminator == "projected":
        from ..models.projected import ProjectedDiscriminator

        p = cfg.projected
        return ProjectedDiscriminator(p.backbone, p.proj_channels, p.head_channels, p.input_size, p.seed,
                                      cond_dim=cond_dim if p.conditional else 0)
    return Discriminator(tuple(cfg.model.disc_channels))


def discriminator_optimizer(cfg: TrainConfig, D: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.discriminator == "projected":  # spectral norm sets the scale: one lr, no lazy R1
        return torch.optim.Adam([p for p in D.parameters() if p.requires_grad], lr=cfg.projected.lr, betas=cfg.betas)
    r1_ratio = cfg.r1_every / (cfg.r1_every + 1)  # lazy regularisation (StyleGAN2)
    return torch.optim.Adam(param_groups(D, cfg.lr_d * r1_ratio, cfg.equalized_lr), lr=cfg.lr_d * r1_ratio,
                            betas=(cfg.betas[0] ** r1_ratio, cfg.betas[1] ** r1_ratio))


def _load_optimizer(opt: torch.optim.Optimizer, state: dict, name: str, state_path: Path) -> None:
    """Adam's moments from a snapshot, with the config's lr and betas.

    ``load_state_dict`` also restores each group's lr and betas, so an lr changed in the
    config for a ``--resume`` would be silently ignored (a run with a third of the lr measured
    the same as its control, to the digit). The config wins; a change is printed.
    """
    fresh = [{k: g[k] for k in ("lr", "betas")} for g in opt.param_groups]
    opt.load_state_dict(state)
    old_lr = [g["lr"] for g in opt.param_groups]
    for g, hyper in zip(opt.param_groups, fresh):
        g.update(hyper)
    if old_lr != [h["lr"] for h in fresh]:
        print(f"{state_path}: {name}'s learning rate changes from the snapshot's to the config's "
              f"(first group {old_lr[0]:.3g} -> {fresh[0]['lr']:.3g})")


def param_groups(module: torch.nn.Module, lr: float, equalized: bool) -> list[dict[str, Any]]:
    """Adam parameter groups; with ``equalized`` each weight's lr is ``lr / sqrt(fan_in)``.

    That is StyleGAN's equalised learning rate expressed for Adam (which ignores gradient
    scale): every layer moves by the same fraction of its weights' scale per step. One
    global lr over-drives wide layers (fan_in 1152 moves 30x faster, relatively, than the
    first layer) and was what made the decoder of the first default model collapse.
    """
    if not equalized:
        return [{"params": list(module.parameters()), "lr": lr}]
    groups = []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            scale = 1.0
            if name == "weight" and p.ndim >= 2:
                scale = float(p[0].numel()) ** -0.5  # 1 / sqrt(fan_in)
            groups.append({"params": [p], "lr": lr * scale})
    return groups


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16; Linux's /proc/cpuinfo),
    None when unknown. Without it oneDNN emulates bfloat16, which can be slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return None
    return ("avx512_bf16" in flags or "amx_bf16" in flags) if flags else None


def as_float(logits: Any) -> Any:
    """Discriminator output (one tensor, or one per head) in float32, so the losses are."""
    return [x.float() for x in logits] if isinstance(logits, (list, tuple)) else logits.float()


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach(), 1.0 - beta)


def load_or_compute_feature_bank(path: Path, extractor: FeatureExtractor, sampler: CropSampler, n: int,
                                 device: str, *, need_glass: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The run's conditioning library: ``n`` real crops' feature vectors and glass shares, computed
    once per run and kept at ``path`` with the crop size they were computed at.

    A bank of another crop size (or an older one that did not record it) is recomputed: pooled
    features depend on the crop's extent, and a generator trained at 256 px but conditioned on
    96-px crops' vectors is asked for images whose features no 256-px crop has. So is a bank
    without glass shares when ``need_glass`` (``glass_weight`` > 0). Returns (features, glass or None).
    """
    if path.exists():
        saved = torch.load(path, weights_only=True)
        same_crop = isinstance(saved, dict) and saved.get("crop") == sampler.crop
        if same_crop and (saved.get("glass") is not None or not need_glass):
            return saved["features"], saved.get("glass")
        if same_crop:
            print(f"{path}: records no glass shares (an older bank); recomputing it for glass_weight")
        else:
            was = f"{saved['crop']}-px crops" if isinstance(saved, dict) else "crops of an unrecorded size"
            print(f"{path}: computed from {was}; recomputing it from {sampler.crop}-px crops (the training crop)")
    bank, glass = compute_feature_bank(extractor, sampler, n, device)
    _atomic_torch_save({"features": bank, "crop": sampler.crop, "glass": glass}, path)
    return bank, glass


@torch.no_grad()
def nearest_bank_vectors(features: torch.Tensor, bank: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Each row's nearest bank vector (Euclidean, per dimension divided by ``scale``): what a
    conditional D pairs a real crop with.

    Paired with its *own* vector, a real image matches its vector exactly and a fake only
    roughly, so D can win on the match alone: in a CPU run D's loss fell to ~1.7 and G's rose
    to ~9 (unconditional: ~4.2 and ~3.5) and the samples grew dark blotches. As in IC-GAN,
    real and fake conditions then come from the same bank, and a real crop matches its
    vector only as closely as a neighbour does (training/tissue-small/README.md has both runs).
    """
    return bank[torch.cdist(features / scale, bank / scale).argmin(1)]


@torch.no_grad()
def compute_feature_bank(extractor: FeatureExtractor, sampler: CropSampler, n: int, device: str,
                         batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of ``n`` random real crops (the conditioning library) and each crop's glass share."""
    feats, glass = [], []
    for i in range(0, n, batch):
        imgs = sampler.sample(min(batch, n - i))
        feats.append(extractor.pooled(resize_for_features(imgs.to(device))).cpu())
        glass.append(background_fraction_t(imgs))
    return torch.cat(feats), torch.cat(glass)


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """Images in [-1, 1] -> one PNG grid (no torchvision needed)."""
    from PIL import Image

    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    n, c, h, w = x.shape
    rows = (n + nrow - 1) // nrow
    grid = torch.full((c, rows * (h + 2) + 2, nrow * (w + 2) + 2), 255, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[:, 2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + k * (w + 2): 2 + k * (w + 2) + w] = x[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` replacing ``path`` atomically: a run killed mid-save keeps its previous state."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (a kill loses those steps)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue  # a line cut short by the kill
    atomic_write_text(path, "".join(l + "\n" for l in keep))


def _sigterm_as_interrupt() -> Any:
    """Treat SIGTERM (kill, a cluster scheduler's pre-emption) like Ctrl-C: checkpoint, then exit."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def load_state(state_path: str | os.PathLike) -> dict[str, Any]:
    """Read a run-state snapshot (``train_state.pt``) with ``weights_only=True``: it holds only
    tensors, numbers, strings and containers (state dicts, RNG states), so loading never runs
    code from the file. Anything else in it is refused with a clear error."""
    import pickle

    try:
        st = torch.load(state_path, weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError) as e:  # a cut or corrupted file
        raise DatagenError(f"{state_path}: not a readable training snapshot ({str(e).splitlines()[0][:200]})") from None
    except pickle.UnpicklingError:
        raise DatagenError(
            f"{state_path}: the snapshot holds objects other than tensors and plain values, which would run code "
            "when loaded; datagen reads run state with torch.load(weights_only=True) only. If you wrote this file "
            "yourself and trust it, re-save it with plain values (state dicts, numbers, lists, dicts)") from None
    if not isinstance(st, dict) or "G" not in st or "step" not in st:
        raise DatagenError(f"{state_path}: not a training snapshot (expected a mapping with G, G_ema, D, step, ...)")
    return st


def compact_state(state_path: str | os.PathLike, out_path: str | os.PathLike, *, half: bool = False) -> Path:
    """A resumable snapshot without optimiser moments (less than half the size), for committing.

    ``half``: also store G, G_ema and D weights as fp16 (half again; resuming rounds them once).
    """
    st = load_state(state_path)
    st.pop("opt_g", None)
    st.pop("opt_d", None)
    if half:
        for k in ("G", "G_ema", "D"):
            if k in st:
                st[k] = {n: t.half() if t.is_floating_point() else t for n, t in st[k].items()}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save(st, out)
    return out


def _is_conditioning_key(key: str) -> bool:
    return key.endswith("embed.weight") or key.startswith("cond_")


def _resume_discriminator(D: torch.nn.Module, saved: dict[str, torch.Tensor], state_path: Path) -> bool:
    """Load a snapshot's D of the same kind, across a change of ``projected.conditional``: an
    unconditional snapshot gives a conditional D its heads (embeddings stay at zero and the
    bank statistics set at build time stay), a
    conditional one gives an unconditional D its heads (embeddings dropped). Returns whether
    the snapshot's D optimiser state fits (the same parameters)."""
    missing, unexpected = D.load_state_dict(saved, strict=False)
    if any(not _is_conditioning_key(k) for k in [*missing, *unexpected]):
        D.load_state_dict(saved)  # a real mismatch: let torch name every key
    if missing:
        print(f"{state_path}: the snapshot's discriminator is unconditional; its heads resume and the "
              "conditional embeddings start at zero")
    if unexpected:
        print(f"{state_path}: the snapshot's discriminator is conditional and the config's is not "
              "(projected.conditional: false); its heads resume and its conditional embeddings are dropped")
    return not missing and not unexpected


def train(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, progress: bool = True) -> Path:
    """Train (or continue training) a digipath UNet; returns the checkpoint directory."""
    out = Path(out)
    state_path = out / STATE_NAME
    if state_path.exists() and not resume:
        raise UsageError(f"{out} already holds a training run; pass {arg('resume', True)} to continue it or choose "
                         f"another {arg('out')} directory")
    if resume and not state_path.exists():
        raise DatagenError(f"{out}: nothing to resume (no {STATE_NAME})")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG_NAME, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # denormal weights/grads make CPU convolutions several times slower
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    sampler = CropSampler([(s.path, s.scale) for s in cfg.data], cfg.crop, max_background=cfg.max_background, seed=cfg.seed)

    extractor: FeatureExtractor | None = None
    bank = bank_glass = None
    cond_dim = 0
    if cfg.feature_extractor != "none":
        extractor = EfficientNetLite0().to(device)
        bank, bank_glass = load_or_compute_feature_bank(out / "feature_bank.pt", extractor, sampler, cfg.cond_bank, device,
                                                        need_glass=cfg.glass_weight > 0)
        cond_dim = bank.shape[1]

    G = build_generator(cfg, cond_dim).to(device)
    D = build_discriminator(cfg, cond_dim).to(device)
    d_conditional = getattr(D, "cond_dim", 0) > 0
    bank_dev = bank.to(device) if bank is not None else None
    glass_dev = bank_glass.to(device) if bank_glass is not None and cfg.glass_weight > 0 else None
    if d_conditional:
        D.set_condition_stats(bank_dev)
    d_loss_fn, g_loss_fn = GAN_LOSSES[cfg.projected.loss if cfg.discriminator == "projected" else "nonsaturating"]
    r1_gamma = cfg.r1_gamma if cfg.discriminator == "resnet" else 0.0
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(param_groups(G, cfg.lr_g, cfg.equalized_lr), lr=cfg.lr_g, betas=cfg.betas)
    opt_d = discriminator_optimizer(cfg, D)
    step, nimg, wall = 0, 0, 0.0
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 2)
    if resume:
        st = load_state(state_path)
        G.load_state_dict(st["G"]); G_ema.load_state_dict(st["G_ema"])
        d_kind = st.get("D_kind", "resnet")  # snapshots before the option held the resnet D
        same_d = d_kind == cfg.discriminator
        d_opt_fits = same_d and _resume_discriminator(D, st["D"], state_path)
        if not same_d:
            print(f"{state_path}: the snapshot's discriminator is {d_kind!r} but the config asks for "
                  f"{cfg.discriminator!r}: G and G_ema resume, D STARTS FRESHLY INITIALISED")
        if "opt_g" in st and "opt_d" in st:
            _load_optimizer(opt_g, st["opt_g"], "G", state_path)
            if d_opt_fits:
                _load_optimizer(opt_d, st["opt_d"], "D", state_path)
        else:  # a compact snapshot (see compact_state): Adam's moments re-warm in a few steps
            print(f"{state_path}: no optimiser state; continuing with fresh Adam moments")
        step, nimg, wall = st["step"], st["nimg"], st.get("wall_s", 0.0)
        if step >= cfg.steps:  # else the bar would sit at 100 % and nothing would train
            raise UsageError(f"the run in {out} is already at step {step}; steps counts from the start of the run, "
                             f"so give more than {step} to continue it", param="steps")
        sampler.set_state(st["sampler"])
        _truncate_log(out / "log.jsonl", step)
        aug_gen.set_state(st["aug_gen"]); noise_gen.set_state(st["noise_gen"])

    # the forward passes' context (bfloat16 autocast for precision: bf16, else none); R1 and the losses stay float32
    amp = partial(autocast_for, torch.device(device), cfg.precision)
    if cfg.precision == "bf16" and torch.device(device).type == "cpu" and cpu_has_native_bf16() is False:
        print("precision: bf16 on a CPU without AVX512-BF16 or AMX: bfloat16 is emulated and may be slower "
              "than fp32 (benchmarks/bench_precision.py --parts train measures it)")
    size = (cfg.crop, cfg.crop)
    fixed = torch.Generator().manual_seed(12345)
    fixed_noise = torch.randn((16, G.config.noise_channels, 2 * cfg.crop, 2 * cfg.crop), generator=fixed)
    fixed_cond = bank[torch.randint(len(bank), (16,), generator=fixed)] if bank is not None else None
    # paint_glass: the vectors of the bank's eight glassiest and eight least glassy crops, painted
    # into two fixed scenes (a bank without glass shares, from before they were kept, skips it)
    glass_rows = bank_glass.argsort(descending=True, stable=True) if bank_glass is not None else None

    # On an accelerator the noise (crop-sized, 8 channels: ~17M floats a step at 256 px, batch 32)
    # is drawn there, seeded from noise_gen, so resume stays exact; on CPU it is drawn as before.
    dev_gen = torch.Generator(device) if torch.device(device).type != "cpu" else None

    def draw_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Noise, conditioning vectors and their bank rows (on the device)."""
        if dev_gen is None:
            z = torch.randn((n, G.config.noise_channels, *size), generator=noise_gen)
        else:
            dev_gen.manual_seed(int(torch.randint(2**62, (1,), generator=noise_gen)))
            z = torch.randn((n, G.config.noise_channels, *size), generator=dev_gen, device=device)
        rows = torch.randint(len(bank), (n,), generator=noise_gen).to(device) if bank is not None else None
        c = bank_dev[rows] if bank_dev is not None else None
        return z, c, rows

    def checkpoint() -> None:
        meta = {"name": cfg.name, "step": step, "kimg": nimg / 1000, "wall_time_s": round(wall, 1),
                "crop": cfg.crop, "discriminator": cfg.discriminator, "train_config": CONFIG_NAME}
        cond = None
        if bank is not None:
            cond = bank[torch.randperm(len(bank), generator=torch.Generator().manual_seed(0))[:512]]
        save_generator(out / "checkpoint", G_ema, cond, meta)
        _atomic_torch_save({
            "G": G.state_dict(), "G_ema": G_ema.state_dict(), "D": D.state_dict(), "D_kind": cfg.discriminator,
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "step": step, "nimg": nimg, "wall_s": wall,
            "sampler": sampler.state(), "aug_gen": aug_gen.get_state(), "noise_gen": noise_gen.get_state(),
        }, state_path)

    def sample_grid() -> None:
        with torch.no_grad():
            imgs = torch.cat([G_ema(fixed_noise[i:i + 4].to(device), None if fixed_cond is None else fixed_cond[i:i + 4].to(device)) for i in range(0, 16, 4)])
        save_grid(imgs, out / "samples" / f"step-{step:06d}.png", nrow=4)

    if step == 0:
        sample_grid()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="it", disable=not progress, dynamic_ncols=True)
    restore_sigterm = _sigterm_as_interrupt()
    log = open(out / "log.jsonl", "a")
    stats: dict[str, Any] = {}  # losses stay device tensors between log lines: no per-step host sync
    glass_sum, glass_n = torch.zeros(2, device=device), 0  # generated and real batches' glass share between log lines
    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else None
    try:
        while step < cfg.steps:
            if deadline is not None and time.monotonic() >= deadline:
                bar.write(f"max_minutes={cfg.max_minutes} reached at step {step}: saving a checkpoint")
                sample_grid()
                checkpoint()
                break
            t0 = time.perf_counter()
            # ---- discriminator ----
            real = dihedral(sampler.sample(cfg.batch, device=device))
            z, c, rows = draw_inputs(cfg.batch)
            with torch.no_grad(), amp():
                fake = G(z, c).float()
            D.requires_grad_(True)
            glass_sum = glass_sum + torch.stack([background_fraction_t(fake).mean(), background_fraction_t(real).mean()])
            glass_n += 1
            if d_conditional:  # a real crop is judged with its nearest bank vector (see nearest_bank_vectors)
                with torch.no_grad(), amp():
                    own = extractor.pooled(resize_for_features(real)).float()  # type: ignore[union-attr]
                c_real = nearest_bank_vectors(own, bank_dev, D.cond_std)  # type: ignore[union-attr]
                with amp():
                    logits_real = D(diff_augment(real, cfg.diffaugment, aug_gen), c_real)
                    logits_fake = D(diff_augment(fake, cfg.diffaugment, aug_gen), c)
            else:
                with amp():
                    logits_real = D(diff_augment(real, cfg.diffaugment, aug_gen))
                    logits_fake = D(diff_augment(fake, cfg.diffaugment, aug_gen))
            loss_d = d_loss_fn(as_float(logits_real), as_float(logits_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if r1_gamma > 0 and step % cfg.r1_every == 0:
                real_r = real.detach().requires_grad_(True)
                r1 = r1_penalty(D(diff_augment(real_r, cfg.diffaugment, aug_gen)), real_r)
                opt_d.zero_grad(set_to_none=True)
                (r1 * (r1_gamma / 2) * cfg.r1_every).backward()
                opt_d.step()
                stats["r1"] = r1.detach()
            # ---- generator ----
            D.requires_grad_(False)
            z, c, rows = draw_inputs(cfg.batch)
            with amp():
                fake = G(z, c).float()
                logits_fake = D(diff_augment(fake, cfg.diffaugment, aug_gen), *([c] if d_conditional else []))
            loss_g = g_loss_fn(as_float(logits_fake))
            loss_total = loss_g
            if extractor is not None and c is not None and cfg.cond_weight > 0 and step % cfg.cond_every == 0:
                with amp():
                    pooled = extractor.pooled(resize_for_features(fake))
                loss_c = conditioning_consistency(pooled.float(), c)
                loss_total = loss_total + cfg.cond_weight * cfg.cond_every * loss_c
                stats["cond"] = loss_c.detach()
            if glass_dev is not None:  # the glass share of the crop each vector came from
                loss_glass = glass_consistency(fake, glass_dev[rows])
                loss_total = loss_total + cfg.glass_weight * loss_glass
                stats["glass_l1"] = loss_glass.detach()
            opt_g.zero_grad(set_to_none=True)
            loss_total.backward()
            opt_g.step()
            # ---- EMA ----
            nimg += cfg.batch
            ema_nimg = cfg.ema_kimg * 1000
            if cfg.ema_rampup:
                ema_nimg = min(ema_nimg, nimg * cfg.ema_rampup)
            _update_ema(G_ema, G, 0.5 ** (cfg.batch / max(ema_nimg, 1e-8)))
            step += 1
            stats.update(d=loss_d.detach(), g=loss_g.detach())
            if step % cfg.log_every == 0:  # the host sync, inside the timed step so wall_s stays honest
                stats = {k: float(v) for k, v in stats.items()}
                glass, glass_real = (glass_sum / max(glass_n, 1)).tolist()
                stats.update(glass=glass, glass_real=glass_real)
                glass_sum, glass_n = torch.zeros(2, device=device), 0
            wall += time.perf_counter() - t0
            bar.update(1)
            if step % cfg.log_every == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items()})
                m = paint_influence(G_ema, fixed_noise[:4, :, :cfg.crop, :cfg.crop].to(device),
                                    None if fixed_cond is None else fixed_cond[:4].to(device), G.config.default_layer)
                stats.update(paint=m["influence"], std=m["spatial_std"])
                if glass_rows is not None:
                    stats.update(paint_glass(G_ema, fixed_noise[4:6, :, :cfg.crop, :cfg.crop].to(device), fixed_cond[4:6].to(device),
                                             bank_dev[glass_rows[:8]], bank_dev[glass_rows[-8:]], G.config.default_layer))
                log.write(json.dumps({"step": step, "kimg": nimg / 1000, "wall_s": round(wall, 1), **{k: round(v, 5) for k, v in stats.items()}}) + "\n")
                log.flush()
            if step % cfg.sample_every == 0:
                sample_grid()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                checkpoint()
    except KeyboardInterrupt:
        bar.write(f"interrupted at step {step}: saving a checkpoint")
        checkpoint()
        raise
    finally:
        restore_sigterm()
        bar.close()
        log.close()
    if not (out / "checkpoint" / "config.json").exists():
        checkpoint()
    return out / "checkpoint"

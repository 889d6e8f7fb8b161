"""bfloat16 against float32, side by side: a ``datagen train`` step and ``datagen generate`` rendering.

``--parts train``: one step as the training loop takes it (datagen/train/loop.py): a D step on
real and generated crops, then a G step through D, with the loop's autocast (``datagen.render.autocast_for``) and
float32 losses, Adam updates included. The generator is the architecture ``datagen train``
builds by default with random weights; the discriminator is the config's (the projected one:
frozen EfficientNet-Lite1 and four heads). Real crops are random pixels: the speed of a step
does not depend on them.

``--parts render``: ``Renderer.pairs`` (layout, plan, painted forward pass, mask) of the same
sample indices with ``precision`` fp32 and bf16 (``generate --precision``), on the built-in
model's demo recipe (``--recipe`` for another). Besides the speed it reports how far bf16 moves
the pixels (mean and max absolute difference, share of pixels that differ by more than 8
levels) and the share of mask pixels that change.

Sides alternate repetition by repetition (``_common.interleaved``), so a busy machine slows
both alike. ``ratio`` = fp32 seconds / bf16 seconds (> 1: bf16 is faster).

    python benchmarks/bench_precision.py [--parts train,render] [--crop 256] [--batch 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import _common as C


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--parts", default="train,render", help="comma-separated: train, render")
    p.add_argument("--crop", type=int, default=256, help="train: crop size in px")
    p.add_argument("--batch", type=int, default=16, help="train: crops per step")
    p.add_argument("--discriminator", choices=("projected", "resnet"), default="projected")
    p.add_argument("--num", type=int, default=16, help="render: samples per repetition")
    p.add_argument("--batch-size", type=int, default=8, help="render: samples per forward pass")
    p.add_argument("--reps", type=int, default=4)
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.crop, a.batch, a.num = 2, 64, 2, 4
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = set(parts) - {"train", "render"}
    if unknown:
        p.error(f"--parts: unknown {', '.join(sorted(unknown))}; expected train, render")
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)
    import torch

    result: dict = {"benchmark": "precision", "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if "train" in parts:
        result["train"] = train_part(a, device)
    if "render" in parts:
        result["render"] = render_part(a, device)
    result["machine"] = C.machine_info(device)
    C.emit(result, a)
    return result


def train_part(a: argparse.Namespace, device: str) -> dict:

    import torch

    from datagen.train import TrainConfig
    from datagen.train.losses import GAN_LOSSES
    from datagen.render import autocast_for
    from datagen.train.loop import as_float, build_discriminator, build_generator, discriminator_optimizer

    arch = C.TINY if a.quick else C.REALISTIC
    cfg = TrainConfig.model_validate({
        "data": [{"path": "unused.png"}], "crop": a.crop, "batch": a.batch, "discriminator": a.discriminator,
        "model": {"channels": list(arch["channels"]), "noise_channels": arch["noise_channels"],
                  "cond_channels": arch["cond_channels"]},
    })
    torch.manual_seed(0)
    G = build_generator(cfg, arch["cond_dim"]).to(device)
    D = build_discriminator(cfg).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=cfg.betas)
    opt_d = discriminator_optimizer(cfg, D)
    d_loss, g_loss = GAN_LOSSES["hinge" if a.discriminator == "projected" else "nonsaturating"]
    gen = torch.Generator(device).manual_seed(0)
    real = torch.rand((a.batch, 3, a.crop, a.crop), generator=gen, device=device) * 2 - 1
    z = torch.randn((a.batch, arch["noise_channels"], a.crop, a.crop), generator=gen, device=device)
    c = torch.randn((a.batch, arch["cond_dim"]), generator=gen, device=device)

    def step(precision: str) -> None:
        amp = partial(autocast_for, torch.device(device), precision)  # as the training loop makes it
        with torch.no_grad(), amp():
            fake = G(z, c).float()
        D.requires_grad_(True)
        with amp():
            lr, lf = D(real), D(fake)
        loss = d_loss(as_float(lr), as_float(lf))
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        with amp():
            logits = D(G(z, c).float())
        loss = g_loss(as_float(logits))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    times = C.interleaved({"fp32": lambda: step("fp32"), "bf16": lambda: step("bf16")}, a.reps, device=device)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "crop": a.crop,
        "batch": a.batch,
        "discriminator": a.discriminator,
        "generator": "tiny" if a.quick else "datagen train default",
        "fp32": C.summary(times["fp32"], a.batch),
        "bf16": C.summary(times["bf16"], a.batch),
        "ratio": round(med["fp32"] / med["bf16"], 3),
    }


def render_part(a: argparse.Namespace, device: str) -> dict:
    import numpy as np

    from datagen.generate import build_renderer, prepare

    recipe = C.recipe_from_args(a)
    job = prepare(recipe, num=a.num, seed=0, device=device, check_separability=False)
    renderers = {"fp32": job.renderer, "bf16": build_renderer(job.recipe, job.generator, 0, "bf16")}
    indices = range(a.num)
    out: dict[str, tuple] = {}

    def run(name: str) -> None:
        out[name] = renderers[name].pairs(indices, batch_size=a.batch_size)

    times = C.interleaved({n: (lambda n=n: run(n)) for n in renderers}, a.reps, device=device)
    med = {k: statistics.median(v) for k, v in times.items()}
    (i32, m32), (i16, m16) = out["fp32"], out["bf16"]
    diff = np.abs(i32.astype(np.int16) - i16.astype(np.int16))
    return {
        "recipe": str(recipe),
        "size": list(job.renderer.size),
        "mask": job.renderer.mask_mode,
        "batch_size": a.batch_size,
        "fp32": C.summary(times["fp32"], a.num),
        "bf16": C.summary(times["bf16"], a.num),
        "ratio": round(med["fp32"] / med["bf16"], 3),
        "pixels": {"mean_abs_diff": round(float(diff.mean()), 3), "max_abs_diff": int(diff.max()),
                   "share_over_8": round(float((diff > 8).mean()), 5)},
        "mask_pixels_changed": round(float((m32 != m16).mean()), 5),
    }


if __name__ == "__main__":
    main()

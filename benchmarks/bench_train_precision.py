"""Training step speed under ``precision: bf16`` against ``fp32`` (``datagen train``, same step, side by side).

One step is what the training loop does (datagen/train/loop.py): a D step on real and generated
crops, then a G step through D, with the loop's own autocast factory and float32 losses, Adam
updates included. The generator is the architecture ``datagen train`` builds by default with
random weights; the discriminator is the config's (the projected one: frozen EfficientNet-Lite1
and four heads). Real crops are random pixels: the speed of a step does not depend on them.
The two precisions alternate step by step (``_common.interleaved``), so a busy machine slows
both alike. ``ratio`` = fp32 seconds / bf16 seconds (> 1: bf16 is faster).

    python benchmarks/bench_train_precision.py [--crop 128] [--batch 8] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics

import _common as C


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(p)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--discriminator", choices=("projected", "resnet"), default="projected")
    p.add_argument("--reps", type=int, default=4)
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.crop, a.batch = 2, 64, 2
    C.setup_threads(a.threads)
    device = C.resolve_device(a.device)

    import torch

    from datagen.train import TrainConfig
    from datagen.train.losses import GAN_LOSSES
    from datagen.train.loop import as_float, autocast, build_discriminator, build_generator, discriminator_optimizer

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
        amp = autocast(device, precision)
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
    result = {
        "benchmark": "train_precision",
        "crop": a.crop,
        "batch": a.batch,
        "discriminator": a.discriminator,
        "generator": "tiny" if a.quick else "datagen train default",
        "fp32": C.summary(times["fp32"], a.batch),
        "bf16": C.summary(times["bf16"], a.batch),
        "ratio": round(med["fp32"] / med["bf16"], 3),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": C.machine_info(device),
    }
    C.emit(result, a)
    return result


if __name__ == "__main__":
    main()

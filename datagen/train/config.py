"""Training configuration: one validated YAML file rebuilds a run exactly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import load_yaml, parse_model


class DataSource(BaseModel):
    """One image file or folder of images, optionally rescaled (e.g. 0.5 brings 40x to 20x)."""

    model_config = ConfigDict(extra="forbid")
    path: str
    scale: float = Field(1.0, gt=0, le=4)


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 96, 128, 128], min_length=2)
    noise_channels: int = Field(8, ge=1)
    cond_channels: int = Field(32, ge=1)
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "reflect"
    default_layer: str | None = None
    skip_min_stride: int = Field(16, ge=1)
    noise_injection: bool = True
    decoder_bias: bool = True
    norm: Literal["pixel", "channel"] = "channel"
    disc_channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 128, 192], min_length=2)


class ProjectedSection(BaseModel):
    """The Projected-GAN discriminator (``discriminator: projected``), see datagen/models/projected.py."""

    model_config = ConfigDict(extra="forbid")
    backbone: Literal["efficientnet-lite1", "efficientnet-lite0"] = "efficientnet-lite1"
    """Frozen pretrained network. Lite1 by default: Lite0 is the realism metric's network."""
    proj_channels: int = Field(64, ge=1)
    """Channels after cross-channel mixing at stride 4 (doubling per scale: 64, 128, 256, 512)."""
    head_channels: int = Field(64, ge=1)
    input_size: int | None = Field(None, ge=32)
    """Resize images to this size before the frozen network (None: the crop as it is)."""
    loss: Literal["hinge", "nonsaturating"] = "hinge"
    lr: float = Field(2e-4, gt=0)
    """Adam lr of the heads (one lr for all: spectral norm, not equalised lr, sets their scale)."""
    seed: int = Field(0, ge=0)
    """Seed of the fixed random cross-channel / cross-scale mixing."""
    conditional: bool = False
    """Heads also judge whether an image matches its conditioning vector (projection: a real
    crop is paired with its nearest feature-bank vector, a fake with the vector it was drawn from),
    so the generator must follow its vector instead of drawing whatever fools an unconditional
    D. Needs ``feature_extractor``; costs one EfficientNet-Lite0 pass over each real batch. Resuming
    an unconditional D starts the new embeddings at zero. Measured on the built-in model it did not
    help within 196 CPU steps (training/tissue-small/README.md), so it is off by default."""


class TrainConfig(BaseModel):
    """Everything ``datagen train`` needs; written to ``OUT/train.yaml`` for resume."""

    model_config = ConfigDict(extra="forbid")
    data: list[DataSource] = Field(min_length=1)
    crop: int = Field(128, ge=16)
    batch: int = Field(16, ge=2)
    steps: int = Field(5000, ge=1)
    lr_g: float = Field(2.5e-3, gt=0)
    lr_d: float = Field(2.5e-3, gt=0)
    equalized_lr: bool = True
    """Per-layer Adam lr = lr / sqrt(fan_in) (StyleGAN's equalised lr); lr_g/lr_d are then per
    unit-variance weight, as in StyleGAN2 (0.0025). False: one lr for every parameter."""
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = Field(0.5, ge=0)
    r1_every: int = Field(16, ge=1)
    ema_kimg: float = Field(5.0, gt=0)
    ema_rampup: float | None = 0.05
    diffaugment: str = "color,translation,cutout"
    """DiffAugment ops applied alike to real and fake images before D, comma-separated, from
    color, zoom, translation, cutout (datagen/train/augment.py). ``zoom`` magnifies a random
    window of half the images so a projected D sees nuclei at the scale the 96-px FD does."""
    feature_extractor: Literal["efficientnet-lite0", "none"] = "efficientnet-lite0"
    cond_weight: float = Field(1.0, ge=0)
    cond_every: int = Field(2, ge=1)
    cond_bank: int = Field(1024, ge=16)
    glass_weight: float = Field(0.0, ge=0)
    """Weight of a loss that asks each generated image for the glass share of the real crop its
    conditioning vector came from (a soft version of the crop sampler's glass test). The
    projected D's ImageNet features hardly tell glass from pale tissue, and CPU continuations of
    the built-in model stopped drawing glass while FD improved; glass is what its ``background``
    class paints. 0 (default) leaves it out; needs feature_extractor (the bank)."""
    max_background: float = Field(0.5, ge=0, le=1)
    checkpoint_every: int = Field(250, ge=1)
    sample_every: int = Field(500, ge=1)
    log_every: int = Field(25, ge=1)
    seed: int = Field(0, ge=0)
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    name: str = "digipath-unet"
    model: ModelSection = Field(default_factory=ModelSection)
    discriminator: Literal["resnet", "projected"] = "resnet"
    """resnet: the small residual D on pixels (with R1). projected: heads on frozen pretrained
    features (Projected GAN); R1 is not used with it (r1_gamma is ignored)."""
    projected: ProjectedSection = Field(default_factory=ProjectedSection)
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: the G and D forward passes run under bfloat16 autocast (weights, optimiser state, EMA,
    losses and R1 stay float32). On a 2-core AVX512-BF16 CPU a step was 2.1x faster at 256-px crops,
    batch 16, and 1.1-1.3x at 128 px, batch 8 (benchmarks/bench_precision.py --parts train); on
    CUDA it needs an Ampere or newer card."""
    max_minutes: float | None = Field(None, gt=0)
    """Stop (with a checkpoint) after this many minutes of this invocation, even before ``steps``."""

    @field_validator("diffaugment")
    @classmethod
    def _known_ops(cls, v: str) -> str:
        from .augment import parse_policy

        parse_policy(v)
        return v

    def check(self) -> None:
        stride = 2 ** (len(self.model.channels) - 1)
        if self.crop % stride:
            from ..errors import ConfigError

            raise ConfigError(f"must be a multiple of the generator stride {stride} (2 ** (len(model.channels) - 1)), got {self.crop}", field="crop")
        if self.discriminator == "projected" and (self.projected.input_size or self.crop) < 32:
            from ..errors import ConfigError

            raise ConfigError(f"the projected discriminator reads features down to stride 32: crop (or projected.input_size) must be >= 32, got {self.crop}", field="crop")
        if self.discriminator == "projected" and self.projected.conditional and self.feature_extractor == "none":
            from ..errors import ConfigError

            raise ConfigError("a conditional discriminator needs conditioning vectors: set feature_extractor "
                              "(efficientnet-lite0) or projected.conditional: false", field="projected.conditional")
        if self.glass_weight > 0 and self.feature_extractor == "none":
            from ..errors import ConfigError

            raise ConfigError("the glass loss compares each image with its conditioning vector's crop: set "
                              "feature_extractor (efficientnet-lite0) or glass_weight: 0", field="glass_weight")


def load_train_config(path: str | os.PathLike, **overrides: object) -> TrainConfig:
    """Read a training YAML; data paths resolve against the file's folder."""
    p = Path(path)
    raw = load_yaml(p) or {}
    if not isinstance(raw, dict):
        from ..errors import ConfigError

        raise ConfigError("expected a mapping of training options", file=p)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    cfg = parse_model(TrainConfig, raw, file=p)
    for src in cfg.data:
        if not os.path.isabs(src.path):
            src.path = str((p.parent / src.path).resolve())
    try:
        cfg.check()
    except Exception as e:  # ConfigError without file
        from ..errors import ConfigError

        if isinstance(e, ConfigError):
            raise ConfigError(e.message, file=p, field=e.field) from None
        raise
    return cfg

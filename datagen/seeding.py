"""Per-sample random streams: (seed, sample index, purpose) fully determine every draw.

A sample never shares a random stream with another sample, so a dataset can be
generated in any order, resumed, or split over workers and still be identical.
Each purpose (noise, layout, vector choice, augmentation, ...) gets its own
stream, so changing how one part draws never shifts the others.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _purpose_key(purpose: str) -> int:
    return int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=4).digest(), "little")


def sample_seed_sequence(seed: int, index: int, purpose: str) -> np.random.SeedSequence:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.SeedSequence([int(seed), int(index), _purpose_key(purpose)])


def sample_rng(seed: int, index: int, purpose: str) -> np.random.Generator:
    """A numpy Generator for one sample and one purpose."""
    return np.random.default_rng(sample_seed_sequence(seed, index, purpose))


def sample_torch_generator(seed: int, index: int, purpose: str) -> torch.Generator:
    """A CPU torch.Generator for one sample and one purpose (draw on CPU, then move)."""
    state = sample_seed_sequence(seed, index, purpose).generate_state(2, dtype=np.uint32)
    g = torch.Generator(device="cpu")
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g

"""Random streams: a seed, a few integer coordinates and a purpose fully determine every draw.

A stream is keyed by ``(seed, *parts, purpose)``: the parts say *where* (a sample index; a
canvas noise tile's row and column), the purpose says *what for* (noise, layout, vector
choice, augmentation, ...). A sample never shares a stream with another sample, so a
dataset can be generated in any order, resumed, or split over workers and still be
identical; a canvas tile draws the same noise whichever tile asks for it; and changing how
one purpose draws never shifts the others.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _purpose_key(purpose: str) -> int:
    return int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=4).digest(), "little")


def stream_seed_sequence(seed: int, *parts: int, purpose: str) -> np.random.SeedSequence:
    """The SeedSequence of stream ``(seed, *parts, purpose)``; seed and parts must be non-negative."""
    key = [int(seed), *(int(p) for p in parts)]
    if min(key) < 0:
        raise ValueError(f"seed and stream coordinates (sample index, tile row/column) must be non-negative, "
                         f"got seed={seed}, parts={list(parts)}")
    return np.random.SeedSequence([*key, _purpose_key(purpose)])


def stream_rng(seed: int, *parts: int, purpose: str) -> np.random.Generator:
    """A numpy Generator for stream ``(seed, *parts, purpose)``."""
    return np.random.default_rng(stream_seed_sequence(seed, *parts, purpose=purpose))


def stream_torch_generator(seed: int, *parts: int, purpose: str) -> torch.Generator:
    """A CPU torch.Generator for stream ``(seed, *parts, purpose)`` (draw on the CPU, then move:
    the numbers do not depend on the device that renders)."""
    state = stream_seed_sequence(seed, *parts, purpose=purpose).generate_state(2, dtype=np.uint32)
    g = torch.Generator(device="cpu")
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


# ---- one sample's streams: (seed, sample index, purpose) ------------------------------------

def sample_seed_sequence(seed: int, index: int, purpose: str) -> np.random.SeedSequence:
    """The SeedSequence of one sample and one purpose."""
    return stream_seed_sequence(seed, index, purpose=purpose)


def sample_rng(seed: int, index: int, purpose: str) -> np.random.Generator:
    """A numpy Generator for one sample and one purpose."""
    return stream_rng(seed, index, purpose=purpose)


def sample_torch_generator(seed: int, index: int, purpose: str) -> torch.Generator:
    """A CPU torch.Generator for one sample and one purpose (draw on CPU, then move)."""
    return stream_torch_generator(seed, index, purpose=purpose)


__all__ = ["sample_rng", "sample_seed_sequence", "sample_torch_generator", "stream_rng", "stream_seed_sequence",
           "stream_torch_generator"]

"""Realism metrics: the Fréchet distance between feature distributions of two image sets.

This is FID's formula with EfficientNet-Lite0 in place of Inception-v3 (which is
not installable offline here), so its numbers are *not* comparable with published
FID values, only with each other (same extractor, same layer, same input size,
same number of images):

    FD = ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))

Features: the 1280-channel ``head`` of EfficientNet-Lite0 (the last feature map
before the classifier: 1x1 conv + BN + swish), spatially mean-pooled. That is
the layer analogous to Inception's 2048-d ``pool3`` that FID uses. Images are
resized to the network's native 224 px first (as FID resizes to 299), unless a
caller asks for another size. Everything after the extractor is float64, and
tr((S_a S_b)^(1/2)) is exact for the singular covariances of N < D samples (the
nuclear norm of the centred features' N x M cross-product; see :func:`frechet_distance`).

Typical use::

    ex = realism_extractor()
    fa = extract_features(real_batches, ex)      # (N, 1280)
    fb = extract_features(fake_batches, ex)
    fd = frechet_distance(fa, fb)

FD is biased upwards for finite N (the bias shrinks roughly like 1/N): only
compare values computed with the same N. ``benchmarks/realism.py`` reports the
real-vs-real value at that N as the floor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .features import FeatureExtractor, resize_for_features

FD_EXTRACTOR = "efficientnet-lite0"
FD_LAYER = "head"
"""EfficientNet-Lite0's 1280-d head (pooled): the analogue of Inception pool3 in FID."""
FD_INPUT_SIZE = 224
"""EfficientNet-Lite0's native input size; images are resized to it before feature extraction."""


def realism_extractor(layer: str = FD_LAYER, device: str | torch.device = "cpu",
                      variant: str = FD_EXTRACTOR) -> FeatureExtractor:
    """EfficientNet-Lite0 (ImageNet weights, frozen) read at ``layer`` (default ``head``, 1280-d);
    ``variant="efficientnet-lite1"`` for the second network (the projected D's backbone)."""
    from .features import EfficientNetLite0

    return EfficientNetLite0((layer,), variant=variant).to(device)


def _as_float_batch(batch: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1], from that or from uint8 (N, H, W, 3) / (N, 3, H, W)."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        raise ValueError(f"expected image batches of shape (N, 3, H, W) or uint8 (N, H, W, 3), got {getattr(batch, 'shape', type(batch))}")
    if batch.dtype == torch.uint8:
        if batch.shape[-1] == 3 and batch.shape[1] != 3:
            batch = batch.permute(0, 3, 1, 2)
        return batch.float().div(127.5).sub(1.0)
    if batch.shape[1] != 3:
        raise ValueError(f"expected float images (N, 3, H, W) in [-1, 1], got shape {tuple(batch.shape)}")
    return batch.float()


def _resize(images: torch.Tensor, input_size: int | None) -> torch.Tensor:
    if input_size is None:
        return resize_for_features(images)  # only tiny images are upsampled (to 64 px), as in training
    if tuple(images.shape[-2:]) == (input_size, input_size):
        return images
    down = min(images.shape[-2:]) > input_size
    return F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=down)


@torch.no_grad()
def extract_features(
    images: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    extractor: FeatureExtractor,
    *,
    batch_size: int = 32,
    input_size: int | None = FD_INPUT_SIZE,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Pooled features (N, D) float64 of ``images``.

    ``images``: one tensor/array holding all images, or an iterable of batches; each is
    float (N, 3, H, W) in [-1, 1] (what generators output and CropSampler gives) or
    uint8 (N, H, W, 3). Every image is resized to ``input_size`` square (bilinear;
    antialiased when shrinking) before the extractor; ``None`` keeps the size (tiny
    images are still upsampled to 64 px so the deepest layer keeps a few pixels).
    ``D`` is the extractor's pooled width: 1280 for :func:`realism_extractor`.
    """
    if device is None:
        p = next(extractor.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    if isinstance(images, (torch.Tensor, np.ndarray)):
        whole = images
        images = (whole[i:i + batch_size] for i in range(0, len(whole), batch_size))
    out = []
    for batch in images:
        x = _as_float_batch(batch)
        for i in range(0, len(x), batch_size):
            chunk = _resize(x[i:i + batch_size].to(device), input_size)
            out.append(extractor.pooled(chunk).double().cpu())
    if not out:
        raise ValueError("extract_features: no images")
    return torch.cat(out).numpy()


def _as_features(feats: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, D) float64, N >= 2, finite."""
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().double().numpy()
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"expected features of shape (N, D), got {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinity")
    return f


def feature_statistics(feats: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), float64."""
    f = _as_features(feats)
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for symmetric PSD S1, S2 via symmetric eigendecompositions.

    S1 S2 has the eigenvalues of S1^(1/2) S2 S1^(1/2), which is symmetric PSD, so the trace is the
    sum of the square roots of that matrix's eigenvalues. Eigenvalues at rounding level
    (rank-deficient covariances when N <= D) count as 0. No complex parts.
    """
    def nonneg(w: np.ndarray) -> np.ndarray:
        # eigenvalues below rounding level (numpy's matrix_rank tolerance) are zeros of a singular
        # matrix: without this, sqrt turns their +-1e-16 noise into 1e-8 contributions
        tol = max(float(w.max(initial=0.0)), 0.0) * w.size * np.finfo(np.float64).eps
        return np.where(w > tol, w, 0.0)

    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root = (v * np.sqrt(nonneg(w))) @ v.T
    m = root @ s2 @ root
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(nonneg(ev)).sum())


def _trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray, eps: float = 1e-6) -> float:
    """The pytorch-fid way: scipy's sqrtm of S1 S2, offset by eps*I when singular, real part
    when the imaginary one is rounding noise."""
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm: imaginary component {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                                method: Literal["eigh", "sqrtm"] = "eigh") -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: means {mu1.shape} vs {mu2.shape}, covariances {s1.shape} vs {s2.shape}")
    diff = mu1 - mu2
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(s1, s2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(s1, s2)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(fd, 0.0)  # a true distance is >= 0; rounding can give -1e-12 for identical sets


def _trace_sqrt_product_samples(a: np.ndarray, b: np.ndarray) -> float:
    """tr((S_a S_b)^(1/2)) straight from the features, for few samples in many dimensions.

    With centred data A (n, D), B (m, D), S_a = A^T A / (n-1) and S_b = B^T B / (m-1), the
    non-zero eigenvalues of S_a S_b are those of (A B^T)(A B^T)^T / ((n-1)(m-1)), so the trace
    is the nuclear norm of the small (n, m) matrix A B^T over sqrt((n-1)(m-1)): exact, no
    D x D decomposition, and singular values are never negative.
    """
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    sv = np.linalg.svd(ca @ cb.T, compute_uv=False)
    return float(sv.sum() / np.sqrt((len(a) - 1) * (len(b) - 1)))


def frechet_distance(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor,
                     method: Literal["auto", "eigh", "sqrtm"] = "auto") -> float:
    """Fréchet distance between the Gaussians fitted to features (N, D) and (M, D).

    Means and unbiased covariances in float64. ``tr((S_a S_b)^(1/2))`` is computed
    exactly for the rank-deficient covariances of few samples: ``"auto"`` (default) takes
    the nuclear norm of the (N, M) cross-product of the centred features when
    min(N, M) < D, else a symmetric eigendecomposition of the covariances (``"eigh"``);
    ``"sqrtm"`` is pytorch-fid's ``scipy.linalg.sqrtm`` with its safeguards.
    """
    a, b = (_as_features(f) for f in (feats_a, feats_b))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    if method == "auto" and min(len(a), len(b)) < a.shape[1]:
        ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
        diff = a.mean(axis=0) - b.mean(axis=0)
        tr_a = float((ca * ca).sum() / (len(a) - 1))
        tr_b = float((cb * cb).sum() / (len(b) - 1))
        fd = float(diff @ diff + tr_a + tr_b - 2.0 * _trace_sqrt_product_samples(a, b))
        return max(fd, 0.0)
    mu_a, s_a = feature_statistics(a)
    mu_b, s_b = feature_statistics(b)
    return frechet_distance_from_stats(mu_a, s_a, mu_b, s_b, method="eigh" if method == "auto" else method)


def nearest_neighbour_distances(queries: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> np.ndarray:
    """Euclidean distance from each query feature (N, D) to its nearest reference feature (M, D).

    A memorisation check: a generator that copies training crops puts its samples closer
    to the training set than fresh real crops are; comparable ones sit as far away.
    """
    q = torch.from_numpy(_as_features(queries))
    r = torch.from_numpy(_as_features(reference))
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"feature sizes differ: {q.shape[1]} vs {r.shape[1]}")
    return torch.cdist(q, r).min(dim=1).values.numpy()


__all__ = [
    "FD_EXTRACTOR", "FD_INPUT_SIZE", "FD_LAYER", "extract_features", "feature_statistics",
    "frechet_distance", "frechet_distance_from_stats", "nearest_neighbour_distances", "realism_extractor",
]

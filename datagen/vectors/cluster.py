"""Group vectors by direction: spherical k-means (cosine distance).

Vectors are L2-normalised, centroids are seeded with k-means++ from a fixed
``torch.Generator`` and refined by alternating assignment (largest cosine) and
update (normalised mean). Runs entirely on the CPU in float64, so the result is
deterministic for a given seed. A cluster's *prototype* is the member closest to
its centroid: a real activation vector, never an average (the paper's point:
averages may be out of distribution).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import DatagenError
from .library import VectorLibrary


@dataclass
class Clustering:
    """labels (N,) cluster of each row; centroids (k, C) unit vectors; prototypes (k,) row
    index of the member nearest each centroid; sizes (k,) members per cluster."""

    labels: torch.Tensor
    centroids: torch.Tensor
    prototypes: torch.Tensor
    sizes: torch.Tensor
    iterations: int


def cluster_vectors(vectors: torch.Tensor, k: int, *, seed: int = 0, max_iter: int = 100) -> Clustering:
    """Spherical k-means of (N, C) ``vectors`` into ``k`` clusters (cosine distance)."""
    n = len(vectors)
    if not 1 <= k <= n:
        raise DatagenError(f"number of clusters must be between 1 and the number of vectors ({n}), got {k}")
    x = F.normalize(vectors.detach().cpu().double(), dim=1, eps=1e-12)
    g = torch.Generator().manual_seed(int(seed))

    # k-means++ seeding on cosine distance
    first = int(torch.randint(n, (1,), generator=g))
    centers = [first]
    dist = (1 - x @ x[first]).clamp_min(0)
    for _ in range(1, k):
        total = float(dist.sum())
        if total <= 0:  # fewer distinct directions than k: take unused rows in order
            nxt = next(i for i in range(n) if i not in centers)
        else:
            nxt = int(torch.multinomial(dist / total, 1, generator=g))
        centers.append(nxt)
        dist = torch.minimum(dist, (1 - x @ x[nxt]).clamp_min(0))
    cent = x[centers].clone()

    labels = torch.full((n,), -1, dtype=torch.long)
    it = 0
    for it in range(1, max_iter + 1):
        sim = x @ cent.T
        new = sim.argmax(dim=1)
        # refill empty clusters with the point worst served by its centroid
        counts = torch.bincount(new, minlength=k)
        for c in torch.nonzero(counts == 0).flatten().tolist():
            best = sim.gather(1, new[:, None]).squeeze(1)
            movable = counts[new] > 1
            cand = torch.where(movable, best, torch.full_like(best, float("inf")))
            j = int(cand.argmin())
            counts[new[j]] -= 1
            new[j] = c
            counts[c] = 1
            sim[j] = float("-inf")
            sim[j, c] = 1.0
        if torch.equal(new, labels):
            break
        labels = new
        summed = torch.zeros_like(cent).index_add_(0, labels, x)
        cent = F.normalize(summed, dim=1, eps=1e-12)

    sim = x @ cent.T
    prototypes = torch.empty(k, dtype=torch.long)
    for c in range(k):
        members = torch.nonzero(labels == c).flatten()
        prototypes[c] = members[sim[members, c].argmax()]
    return Clustering(
        labels=labels,
        centroids=cent.float(),
        prototypes=prototypes,
        sizes=torch.bincount(labels, minlength=k),
        iterations=it,
    )


def cluster_library(library: VectorLibrary, k: int, *, seed: int = 0, max_iter: int = 100) -> Clustering:
    """Cluster a library in place: sets each record's ``cluster`` and the library's
    ``clustering`` provenance (k, seed, metric, prototype vector ids)."""
    result = cluster_vectors(library.vectors, k, seed=seed, max_iter=max_iter)
    ids = library.ids
    info: dict[str, Any] = {
        "k": k,
        "seed": seed,
        "metric": "cosine",
        "method": "spherical k-means (k-means++ init)",
        "prototypes": [ids[int(r)] for r in result.prototypes],
        "sizes": result.sizes.tolist(),
    }
    library.set_clusters(result.labels, info)
    return result


__all__ = ["Clustering", "cluster_library", "cluster_vectors"]

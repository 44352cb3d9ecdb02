"""Parity metrics between an artifact's output and the PyTorch float32 reference."""

from __future__ import annotations

import numpy as np

__all__ = ["kmeans_fit", "kmeans_segment", "mean_iou", "parity", "pixels", "psnr"]


def _per_pixel_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity over channels at every pixel of (B, C, H, W) maps -> (B, H, W)."""
    dot = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return dot / np.maximum(norms, 1e-30)


def parity(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """``max_abs``, ``rel_l2`` (||out - ref|| / ||ref||), per-pixel channel cosine (min, mean)."""
    if output.shape != reference.shape:
        raise ValueError(f"output: shape {output.shape} differs from the reference's {reference.shape}")
    out, ref = output.astype(np.float64), reference.astype(np.float64)
    if not np.isfinite(out).all():
        nonfinite = int((~np.isfinite(out)).sum())
        return {"max_abs": float("inf"), "rel_l2": float("inf"), "cosine_min": -1.0,
                "cosine_mean": -1.0, "nonfinite": nonfinite}
    cos = _per_pixel_cosine(out, ref)
    return {
        "max_abs": float(np.abs(out - ref).max()),
        "rel_l2": float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
    }


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the reference's value range."""
    out, ref = output.astype(np.float64), reference.astype(np.float64)
    mse = float(np.mean((out - ref) ** 2))
    peak = float(ref.max() - ref.min())
    if mse == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(peak, 1e-30) ** 2 / mse))


def pixels(features: np.ndarray) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) -> (H*W, C) float64."""
    f = features.reshape(features.shape[-3], -1).T
    return np.ascontiguousarray(f, dtype=np.float64)


def kmeans_fit(features: np.ndarray, clusters: int = 8, *, seed: int = 0, iterations: int = 30,
               max_fit_pixels: int = 20000) -> np.ndarray:
    """Centroids (clusters, C) of a seeded k-means (k-means++ start, Lloyd steps) over the pixels of
    a feature map; fitted on at most ``max_fit_pixels`` pixels drawn with the same seed."""
    x = pixels(features)
    rng = np.random.default_rng(seed)
    if len(x) > max_fit_pixels:
        x = x[rng.choice(len(x), max_fit_pixels, replace=False)]
    k = min(clusters, len(x))
    centroids = [x[rng.integers(len(x))]]
    dist = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = dist / dist.sum() if dist.sum() > 0 else np.full(len(x), 1 / len(x))
        centroids.append(x[rng.choice(len(x), p=probs)])
        dist = np.minimum(dist, ((x - centroids[-1]) ** 2).sum(1))
    c = np.stack(centroids)
    for _ in range(iterations):
        labels = _nearest(x, c)
        new = np.stack([x[labels == i].mean(0) if (labels == i).any() else c[i] for i in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = (x**2).sum(1, keepdims=True) - 2 * x @ centroids.T + (centroids**2).sum(1)
    return d.argmin(1)


def kmeans_segment(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(H, W) label map: each pixel's nearest centroid."""
    h, w = features.shape[-2:]
    return _nearest(pixels(features), centroids).reshape(h, w)


def mean_iou(labels: np.ndarray, reference: np.ndarray) -> float:
    """Mean over the classes present in either map of |A∩B| / |A∪B|."""
    ious = []
    for c in np.union1d(np.unique(labels), np.unique(reference)):
        a, b = labels == c, reference == c
        ious.append((a & b).sum() / (a | b).sum())
    return float(np.mean(ious))

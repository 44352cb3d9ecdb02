"""Parity metrics between an artifact's output and the PyTorch float32 reference."""

from __future__ import annotations

import numpy as np

__all__ = ["kmeans_fit", "kmeans_segment", "map_pixels", "mean_iou", "parity", "pixels", "psnr", "sample_pixels"]


#: float64 elements per chunk of the parity pass (32 MiB): the metrics of a 384 x 896 x 896 map
#: must not cost several float64 copies of it.
_CHUNK_ELEMENTS = 4 * 1024 * 1024


def _chunks(output: np.ndarray, reference: np.ndarray):
    """(output, reference) float64 slices of (B, C, H, W) maps, a band of rows at a time, with the
    positions where either is NaN/Inf set to 0 in both; also the count of positions whose
    finiteness differs between the two."""
    if output.shape != reference.shape:
        raise ValueError(f"output: shape {output.shape} differs from the reference's {reference.shape}")
    if output.ndim != 4:
        raise ValueError(f"output: expected a (B, C, H, W) map, got shape {output.shape}")
    b, c, h, w = output.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, b * c * w))
    for r0 in range(0, h, step):
        out = output[:, :, r0:r0 + step].astype(np.float64)
        ref = reference[:, :, r0:r0 + step].astype(np.float64)
        finite_out, finite_ref = np.isfinite(out), np.isfinite(ref)
        mismatched = int(np.count_nonzero(finite_out != finite_ref))
        both = finite_out & finite_ref
        if not both.all():
            out, ref = np.where(both, out, 0.0), np.where(both, ref, 0.0)
        yield out, ref, mismatched


def parity(output: np.ndarray, reference: np.ndarray) -> dict[str, float | int]:
    """``max_abs``, ``rel_l2`` (||out - ref|| / ||ref||), per-pixel channel cosine (min, mean) of
    (B, C, H, W) maps, and ``nonfinite``: how many values are NaN/Inf in one map but not the
    other. When ``nonfinite`` is not 0 the other metrics are NaN: they would hide the poisoned
    values (reports write them as null)."""
    max_abs = err_sq = ref_sq = cos_sum = 0.0
    cos_min, pixels, nonfinite = np.inf, 0, 0
    for out, ref, mismatched in _chunks(output, reference):
        nonfinite += mismatched
        diff = out - ref
        if diff.size:
            max_abs = max(max_abs, float(np.abs(diff).max()))
        err_sq += float(np.square(diff).sum())
        ref_sq += float(np.square(ref).sum())
        norms = np.sqrt(np.square(out).sum(axis=1) * np.square(ref).sum(axis=1))
        cos = (out * ref).sum(axis=1) / np.maximum(norms, 1e-30)
        cos_min = min(cos_min, float(cos.min())) if cos.size else cos_min
        cos_sum += float(cos.sum())
        pixels += cos.size
    if nonfinite:
        nan = float("nan")
        return {"max_abs": nan, "rel_l2": nan, "cosine_min": nan, "cosine_mean": nan, "nonfinite": nonfinite}
    return {
        "max_abs": max_abs,
        "rel_l2": float(np.sqrt(err_sq) / max(np.sqrt(ref_sq), 1e-30)),
        "cosine_min": float(cos_min) if pixels else 1.0,
        "cosine_mean": cos_sum / pixels if pixels else 1.0,
        "nonfinite": 0,
    }


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the reference's value range; NaN when the
    two maps disagree on which values are NaN/Inf."""
    err_sq, count, nonfinite = 0.0, 0, 0
    lo, hi = np.inf, -np.inf
    for out, ref, mismatched in _chunks(output, reference):
        nonfinite += mismatched
        err_sq += float(np.square(out - ref).sum())
        count += ref.size
        if ref.size:
            lo, hi = min(lo, float(ref.min())), max(hi, float(ref.max()))
    if nonfinite:
        return float("nan")
    mse = err_sq / max(count, 1)
    if mse == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(hi - lo, 1e-30) ** 2 / mse))


def pixels(features: np.ndarray, index: np.ndarray | slice = slice(None)) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) -> (H*W, C) float64; only the pixels ``index`` (flat indices or
    a slice) when given."""
    f = features.reshape(features.shape[-3], -1)[:, index].T
    return np.ascontiguousarray(f, dtype=np.float64)


#: Pixels per chunk when a per-pixel function runs over a whole map (float64 rows of C values).
_PIXEL_CHUNK = 65536


def map_pixels(features: np.ndarray, fn, chunk: int = _PIXEL_CHUNK) -> np.ndarray:
    """``fn`` applied to (n, C) float64 pixel rows of ``features``, a chunk at a time (a whole map
    in float64 can be gigabytes); the results are concatenated along the first axis."""
    count = features.shape[-2] * features.shape[-1]
    return np.concatenate([fn(pixels(features, slice(p, p + chunk))) for p in range(0, count, chunk)])


def sample_pixels(features: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """At most ``count`` pixels of ``features`` as (n, C) float64, drawn without replacement with
    ``seed`` (all of them, in order, when there are no more than ``count``)."""
    total = features.shape[-2] * features.shape[-1]
    if total <= count:
        return pixels(features)
    return pixels(features, np.sort(np.random.default_rng(seed).choice(total, count, replace=False)))


def kmeans_fit(features: np.ndarray, clusters: int = 8, *, seed: int = 0, iterations: int = 30,
               max_fit_pixels: int = 20000) -> np.ndarray:
    """Centroids (clusters, C) of a seeded k-means (k-means++ start, Lloyd steps) over the pixels of
    a feature map; fitted on at most ``max_fit_pixels`` pixels drawn with the same seed."""
    x = sample_pixels(features, max_fit_pixels, seed)
    rng = np.random.default_rng(seed)
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
    return map_pixels(features, lambda x: _nearest(x, centroids)).reshape(h, w)


def mean_iou(labels: np.ndarray, reference: np.ndarray) -> float:
    """Mean over the classes present in either map of |A∩B| / |A∪B|."""
    ious = []
    for c in np.union1d(np.unique(labels), np.unique(reference)):
        a, b = labels == c, reference == c
        ious.append((a & b).sum() / (a | b).sum())
    return float(np.mean(ious))

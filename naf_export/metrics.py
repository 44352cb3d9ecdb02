"""Parity metrics between an artifact's output and the PyTorch float32 reference."""

from __future__ import annotations

import numpy as np

__all__ = ["parity"]


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

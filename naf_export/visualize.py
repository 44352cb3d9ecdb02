"""Pictures of feature maps: PCA colour maps and error heat maps, written as PNG with Pillow."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .metrics import map_pixels, sample_pixels

__all__ = ["error_heatmap", "heat_colors", "label_colors", "pca_basis", "pca_colors", "save_panel"]

# Anchors of a perceptually ordered dark-to-bright map (black, purple, red, orange, pale yellow).
_HEAT_ANCHORS = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], float)


#: Pixels the PCA is fitted on (drawn with a fixed seed): enough for three stable directions.
_PCA_FIT_PIXELS = 50000


def pca_basis(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean (C,), top-3 principal directions (C, 3), and the 1st/99th percentiles of the
    projections of ``features`` (1, C, H, W), fitted on at most 50,000 of its pixels: fitted on the
    reference so that every map drawn with it shares one colour scale."""
    x = sample_pixels(features, _PCA_FIT_PIXELS)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt[:3].T
    proj = (x - mean) @ basis
    return mean, basis, np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)


def pca_colors(features: np.ndarray, basis: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(H, W, 3) uint8: the first three principal components as RGB."""
    mean, directions, low, high = basis
    h, w = features.shape[-2:]
    proj = map_pixels(features, lambda x: (x - mean) @ directions)
    rgb = np.clip((proj - low) / np.maximum(high - low, 1e-12), 0, 1)
    return (rgb.reshape(h, w, 3) * 255).round().astype(np.uint8)


def heat_colors(values: np.ndarray, vmax: float) -> np.ndarray:
    """(H, W) values in [0, vmax] -> (H, W, 3) uint8 heat colours."""
    t = np.clip(values / max(vmax, 1e-30), 0, 1) * (len(_HEAT_ANCHORS) - 1)
    i = np.minimum(t.astype(int), len(_HEAT_ANCHORS) - 2)
    frac = (t - i)[..., None]
    return (_HEAT_ANCHORS[i] * (1 - frac) + _HEAT_ANCHORS[i + 1] * frac).round().astype(np.uint8)


def error_heatmap(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(H, W) per-pixel relative error ||out - ref||_C / ||ref||_C of (1, C, H, W) maps."""
    out, ref = output.reshape(output.shape[-3:]), reference.reshape(reference.shape[-3:])
    diff_sq = np.zeros(out.shape[1:], np.float64)
    ref_sq = np.zeros(out.shape[1:], np.float64)
    for o, r in zip(out, ref):  # a channel at a time: no full-size temporaries
        r = r.astype(np.float64)
        diff_sq += np.square(o - r)
        ref_sq += np.square(r)
    return np.sqrt(diff_sq) / np.maximum(np.sqrt(ref_sq), 1e-30)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 with a fixed, well-separated palette."""
    palette = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
                       np.uint8)
    return palette[labels % len(palette)]


def save_panel(path: str | os.PathLike[str], tiles: Sequence[tuple[str, np.ndarray]], tile_size: int = 256,
               legend: str | None = None) -> None:
    """Tiles (title, (H, W, 3) uint8) side by side, each scaled to ``tile_size`` high (nearest
    neighbour, so feature pixels stay visible), with titles above and an optional legend below."""
    scaled = []
    for title, rgb in tiles:
        h, w = rgb.shape[:2]
        width = max(1, round(w * tile_size / h))
        scaled.append((title, Image.fromarray(rgb).resize((width, tile_size), Image.Resampling.NEAREST)))
    pad, header, footer = 6, 18, 18 if legend else 0
    total_w = sum(img.width for _, img in scaled) + pad * (len(scaled) + 1)
    canvas = Image.new("RGB", (total_w, tile_size + header + footer + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for title, img in scaled:
        draw.text((x, pad), title, fill=(0, 0, 0))
        canvas.paste(img, (x, pad + header))
        x += img.width + pad
    if legend:
        draw.text((pad, pad + header + tile_size + 4), legend, fill=(0, 0, 0))
    canvas.save(path)

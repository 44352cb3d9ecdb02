"""Sample inputs that need no download: bundled images and image-derived feature maps.

Images come from scikit-image's data module (files inside the package). Features stand in for a
vision backbone's output: deterministic, spatially structured maps computed from the image
(colour, local contrast, gradients at two scales, position), lifted to ``C`` channels by a seeded
two-layer random projection. They are not a real backbone's features, but they have the
statistics that matter for checking an upsampler's arithmetic: smooth regions, edges aligned
with the image, correlated channels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAMPLE_IMAGES",
    "derive_features",
    "image_to_tensor",
    "load_image_file",
    "load_sample_image",
    "normalize_image",
    "resize_image",
    "sample_batch",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Colour images bundled with scikit-image (no download needed).
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel")

_FEATURE_SEED = 1234


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 or float in [0, 1] -> (3, H, W) float32 in [0, 1]."""
    array = np.asarray(rgb)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"rgb: expected an (H, W, 3) image, got shape {array.shape}")
    array = array[:, :, :3]
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)


def load_sample_image(name: str) -> torch.Tensor:
    """A bundled scikit-image picture as (3, H, W) float32 in [0, 1]."""
    if name not in SAMPLE_IMAGES:
        raise ValueError(f"name: expected one of {SAMPLE_IMAGES}, got {name!r}")
    import skimage.data

    return image_to_tensor(getattr(skimage.data, name)())


#: Largest image naf-export decodes (pixels): Pillow's own decompression-bomb limit (~89 MP);
#: a file declaring more is refused before it is decoded.
MAX_IMAGE_PIXELS = 89_478_485


def load_image_file(path: str | os.PathLike[str]) -> torch.Tensor:
    """An image file (PNG, JPEG, ...) as (3, H, W) float32 in [0, 1]. Files that declare more than
    :data:`MAX_IMAGE_PIXELS` pixels (decompression bombs among them) are refused unread."""
    from PIL import Image, UnidentifiedImageError

    too_large = f"more than the {MAX_IMAGE_PIXELS:,} naf-export decodes; resize it first"
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(f"image: {os.fspath(path)!r} declares {width}x{height} pixels, {too_large}")
            return image_to_tensor(np.asarray(img.convert("RGB")))
    except Image.DecompressionBombError as exc:  # Pillow's own refusal, above twice its limit
        raise ValueError(f"image: {os.fspath(path)!r} declares {too_large} ({exc})") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"image: cannot read {os.fspath(path)!r} as an image ({exc})") from exc


def resize_image(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Antialiased bilinear resize of a (3, H, W) picture in [0, 1] to ``size``, kept in [0, 1]."""
    size = (int(size[0]), int(size[1]))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """Apply the ImageNet normalisation NAF was trained with to a (..., 3, H, W) tensor in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image - mean) / std


def _descriptors(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (D, h, w) hand-made descriptors, each standardised."""
    h, w = size
    luma = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None, None]
    gy = F.pad(luma[..., 1:, :] - luma[..., :-1, :], (0, 0, 0, 1)).abs()
    gx = F.pad(luma[..., :, 1:] - luma[..., :, :-1], (0, 1, 0, 0)).abs()
    fine = torch.cat([image[None], luma, luma**2, gx, gy], dim=1)
    pooled = F.adaptive_avg_pool2d(fine, (h, w))
    coarse = F.adaptive_avg_pool2d(fine, (max(1, h // 4), max(1, w // 4)))
    coarse = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    contrast = (pooled[:, 4:5] - pooled[:, 3:4] ** 2).clamp_min(0).sqrt()
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(1, 1, h, w)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(1, 1, h, w)
    position = torch.cat([torch.sin(torch.pi * ys), torch.cos(torch.pi * xs), ys * xs], dim=1)
    desc = torch.cat([pooled, coarse, contrast, position], dim=1)[0]
    mean = desc.mean(dim=(1, 2), keepdim=True)
    std = desc.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    return (desc - mean) / std


def derive_features(
    image: torch.Tensor, channels: int, size: int | Sequence[int], seed: int = _FEATURE_SEED
) -> torch.Tensor:
    """Deterministic backbone-like features of ``image`` (3, H, W) in [0, 1]: (channels, h, w).

    The same image, size, channel count and seed always give the same tensor.
    """
    if not (isinstance(channels, int) and channels >= 1):
        raise ValueError(f"channels: expected a positive int, got {channels!r}")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not (isinstance(h, int) and isinstance(w, int) and h >= 1 and w >= 1):
        raise ValueError(f"size: expected (h, w) positive ints, got {size!r}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected (3, H, W) in [0, 1], got shape {tuple(image.shape)}")
    desc = _descriptors(image.float(), (h, w))
    generator = torch.Generator().manual_seed(seed)
    hidden = 4 * desc.shape[0]
    w1 = torch.randn(hidden, desc.shape[0], generator=generator) / desc.shape[0] ** 0.5
    w2 = torch.randn(channels, hidden, generator=generator) / hidden**0.5
    x = F.gelu(torch.einsum("od,dhw->ohw", w1, desc))
    return torch.einsum("co,ohw->chw", w2, x).contiguous()


def sample_batch(
    image_size: Sequence[int] = (448, 448),
    feature_size: Sequence[int] = (28, 28),
    channels: int = 384,
    names: Sequence[str] = SAMPLE_IMAGES[:1],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images (B, 3, Hi, Wi) and their derived features (B, C, h, w)."""
    images = [resize_image(load_sample_image(n), image_size) for n in names]
    feats = [derive_features(img, channels, tuple(feature_size)) for img in images]
    return normalize_image(torch.stack(images)), torch.stack(feats)

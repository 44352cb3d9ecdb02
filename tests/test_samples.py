"""Bundled sample images and image-derived features."""

from __future__ import annotations

import pytest
import torch

from naf_export.samples import SAMPLE_IMAGES, derive_features, load_sample_image, sample_batch


@pytest.mark.parametrize("name", SAMPLE_IMAGES)
def test_sample_images_load_without_download(name):
    img = load_sample_image(name)
    assert img.dim() == 3 and img.shape[0] == 3 and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0


@pytest.mark.parametrize("channels, size", [(384, (28, 28)), (7, (9, 13)), (1024, (32, 16))])
def test_features_are_deterministic_and_shaped(channels, size):
    img = load_sample_image("chelsea")
    a, b = derive_features(img, channels, size), derive_features(img, channels, size)
    assert a.shape == (channels, *size)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()


def _neighbour_correlation(x: torch.Tensor) -> float:
    a, b = x[:, :, :-1].flatten(), x[:, :, 1:].flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_features_are_spatially_structured_not_noise():
    feats = derive_features(load_sample_image("astronaut"), 64, (28, 28))
    assert _neighbour_correlation(feats) > 0.5
    assert abs(_neighbour_correlation(torch.randn(64, 28, 28))) < 0.1
    # Different images give different features.
    other = derive_features(load_sample_image("coffee"), 64, (28, 28))
    assert (feats - other).abs().mean() > 0.1


def test_sample_batch_is_normalised():
    images, feats = sample_batch((64, 96), (9, 12), 16, names=SAMPLE_IMAGES[:2])
    assert images.shape == (2, 3, 64, 96) and feats.shape == (2, 16, 9, 12)
    assert -3.0 < float(images.min()) and float(images.max()) < 3.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="name: expected one of"):
        load_sample_image("lena")
    with pytest.raises(ValueError, match="channels: expected a positive int"):
        derive_features(load_sample_image("rocket"), 0, 9)

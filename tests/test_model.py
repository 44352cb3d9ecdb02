"""NAF model: release state-dict layout, faithful forward, checkpoint safety, input checks."""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from conftest import natten_reference, rel_l2
from naf_export import NAF, CheckpointError, load_naf


def release_state_dict_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of naf_release.pth, written out from the release architecture."""
    layout: dict[str, tuple[int, ...]] = {}
    for branch, k in (("encoder", 1), ("sem_encoder", 3)):
        p = f"image_encoder.{branch}"
        layout[f"{p}.0.weight"], layout[f"{p}.0.bias"] = (128, 3, k, k), (128,)
        for block in (1, 2):
            for n in (1, 2):
                layout[f"{p}.{block}.norm{n}.weight"] = (128,)
                layout[f"{p}.{block}.norm{n}.bias"] = (128,)
                layout[f"{p}.{block}.conv{n}.weight"] = (128, 128, k, k)
                layout[f"{p}.{block}.conv{n}.bias"] = (128,)
    layout["image_encoder.rope.periods"] = (16,)
    return layout


def random_release_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(*shape, generator=gen) * 0.2 for k, shape in release_state_dict_layout().items()}
    state["image_encoder.rope.periods"] = 100.0 ** (2 * torch.arange(16.0) / 32)
    return state


def functional_release_forward(state, image, features, output_size):
    """The release forward written directly from its description with torch.nn.functional,
    RoPE in DINOv3's (HW, D) layout and NATTEN on upsampled keys/values."""
    out_h, out_w = output_size
    if image.shape[-2] > 4 * out_h or image.shape[-1] > 4 * out_w:
        size = (min(image.shape[-2], 4 * out_h, 4 * out_w), min(image.shape[-1], 4 * out_w, 4 * out_h))
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)

    def conv(x, name, k):
        x = F.pad(x, (k // 2,) * 4, mode="reflect") if k > 1 else x
        return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"])

    branches = []
    for branch, k in (("encoder", 1), ("sem_encoder", 3)):
        p = f"image_encoder.{branch}"
        x = conv(image, f"{p}.0", k)
        for block in (1, 2):
            for n in (1, 2):
                x = F.group_norm(x, 8, state[f"{p}.{block}.norm{n}.weight"], state[f"{p}.{block}.norm{n}.bias"])
                x = conv(F.silu(x), f"{p}.{block}.conv{n}", k)
        branches.append(x)
    x = F.adaptive_avg_pool2d(torch.cat(branches, 1), output_size)
    b = x.shape[0]
    # RoPE: 4 heads of 64; coords of pixel centres in [-1, 1]; angles [u..., v...] tiled twice.
    ch = (torch.arange(0.5, out_h) / out_h) * 2 - 1
    cw = (torch.arange(0.5, out_w) / out_w) * 2 - 1
    coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), -1).reshape(-1, 2)
    angles = (2 * math.pi * coords[:, :, None] / state["image_encoder.rope.periods"]).flatten(1).tile(2)
    t = x.reshape(b, 4, 64, out_h * out_w).transpose(2, 3)
    rotated = torch.cat([-t[..., 32:], t[..., :32]], -1)
    q = (t * angles.cos() + rotated * angles.sin()).transpose(2, 3).reshape(b, 256, out_h, out_w)
    k = F.adaptive_avg_pool2d(q, features.shape[-2:])
    return natten_reference(q, k, features, 4)


def test_state_dict_matches_release_layout():
    model = NAF()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == release_state_dict_layout()
    assert sum(p.numel() for p in model.parameters()) == 662_528


@pytest.mark.parametrize(
    "image_size, channels, feature_size, output_size",
    [
        ((2, 448 // 4, 448 // 4), 384, (14, 14), (28, 28)),  # divisible, batch 2
        ((1, 97, 131), 128, (16, 15), (41, 70)),  # non-divisible ratios
        ((1, 300, 500), 96, (9, 10), (18, 20)),  # image larger than 4x output: resize path
    ],
)
def test_forward_matches_functional_release(image_size, channels, feature_size, output_size):
    state = random_release_state()
    model = NAF().eval()
    model.load_state_dict(state)
    gen = torch.Generator().manual_seed(1)
    b = image_size[0]
    image = torch.randn(b, 3, *image_size[1:], generator=gen)
    features = torch.randn(b, channels, *feature_size, generator=gen)
    with torch.no_grad():
        ours = model(image, features, output_size)
        ref = functional_release_forward(state, image, features, output_size)
    assert ours.shape == (b, channels, *output_size)
    assert rel_l2(ours, ref) < 1e-5
    assert (ours - ref).abs().max().item() < 1e-4


def test_untrained_model_is_seeded_and_warns():
    with pytest.warns(UserWarning, match="UNTRAINED"):
        a = load_naf()
    torch.manual_seed(99)  # the global generator must not leak into the stand-in weights
    with pytest.warns(UserWarning, match="UNTRAINED"):
        b = load_naf()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not a.training


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "module."])
def test_release_checkpoint_round_trips(tmp_path, wrapper):
    state = random_release_state(seed=7)
    payload: object = state
    if wrapper == "module.":
        payload = {f"module.{k}": v for k, v in state.items()}
    elif wrapper:
        payload = {wrapper: state, "epoch": 3}
    path = tmp_path / "naf_release.pth"
    torch.save(payload, path)
    model = load_naf(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # ... and what this project saves loads in a model built the release's way.
    saved = tmp_path / "resaved.pth"
    torch.save(model.state_dict(), saved)
    assert set(torch.load(saved, weights_only=True)) == set(release_state_dict_layout())


def test_wrong_state_dict_lists_every_problem(tmp_path):
    state = random_release_state()
    del state["image_encoder.sem_encoder.2.conv2.bias"]
    state["image_encoder.extra.weight"] = torch.zeros(3)
    state["image_encoder.encoder.0.weight"] = torch.zeros(128, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_naf(path)
    text = str(info.value)
    assert "missing keys: image_encoder.sem_encoder.2.conv2.bias" in text
    assert "unexpected keys: image_encoder.extra.weight" in text
    assert "image_encoder.encoder.0.weight: expected (128, 3, 1, 1), got (128, 3, 3, 3)" in text


def test_nan_weights_rejected(tmp_path):
    state = random_release_state()
    state["image_encoder.encoder.1.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="NaN or infinite values: image_encoder.encoder.1.conv1.weight"):
        load_naf(tmp_path / "nan.pth")


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"state_dict": _Exploit(str(marker))}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused"):
        load_naf(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_naf(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save(random_release_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_naf(path)


def test_non_state_dict_payload_and_missing_file(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_naf(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no such file"):
        load_naf(tmp_path / "absent.pth")


@pytest.fixture(scope="module")
def model():
    return NAF().eval()


@pytest.mark.parametrize(
    "image_shape, feature_shape, output_size, message",
    [
        ((1, 3, 64, 64), (1, 32, 8, 16), (32, 32), r"features: spatial size must be at least 9x9"),
        ((1, 3, 64, 64), (1, 32, 16, 8), (32, 32), r"features: spatial size must be at least 9x9"),
        ((1, 3, 64, 64), (1, 32, 16, 16), (12, 32), r"output_size: expected at least the feature size 16x16"),
        ((1, 3, 64, 64), (1, 30, 16, 16), (32, 32), r"features: channel count 30 is not divisible by num_heads=4"),
        ((3, 64, 64), (1, 32, 16, 16), (32, 32), r"image: expected a 4-D tensor"),
        ((1, 3, 64, 64), (32, 16, 16), (32, 32), r"features: expected a 4-D tensor"),
        ((2, 3, 64, 64), (1, 32, 16, 16), (32, 32), r"features: batch size 1 does not match image batch size 2"),
        ((1, 1, 64, 64), (1, 32, 16, 16), (32, 32), r"image: expected 3 channels"),
        ((1, 3, 1, 64), (1, 32, 16, 16), (32, 32), r"image: expected at least 2x2 pixels"),
        ((1, 3, 64, 64), (1, 32, 16, 16), (32,), r"output_size: expected \(height, width\)"),
        ((1, 3, 64, 64), (1, 32, 16, 16), (32.0, 32), r"output_size: expected \(height, width\)"),
    ],
)
def test_bad_forward_inputs(model, image_shape, feature_shape, output_size, message):
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*image_shape), torch.randn(*feature_shape), output_size)


def test_integer_inputs_rejected(model):
    image = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="image: expected a floating-point tensor"):
        model(image.to(torch.uint8), torch.randn(1, 32, 16, 16), (32, 32))

"""The fused GroupNorm -> SiLU -> reflect pad kernel of libnaf_core (via ctypes) against PyTorch,
on every instruction-set variant this machine runs. tests/test_asan.py runs this file again
against a sanitizer build."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from naf_export.native import group_norm_silu_cpu, group_norm_silu_quantized_cpu
from op_feeds import group_norm_silu_reference as reference, rel_l2

pytestmark = pytest.mark.usefixtures("core_library")  # fixtures `core_library`, `isa`: conftest.py


# (N, C, H, W, groups, pad): widths on and off the vector length, the encoder's 1x1 (pad 0) and
# 3x3 (pad 1) blocks, the smallest legal reflect sizes, one group and one channel per group.
CASES = [
    (1, 16, 9, 9, 8, 1),
    (2, 32, 13, 21, 8, 0),
    (1, 16, 32, 48, 4, 1),
    (2, 8, 5, 17, 1, 2),
    (1, 12, 2, 2, 12, 1),
    (1, 128, 28, 28, 8, 1),
]


@pytest.mark.parametrize("n, c, h, w, groups, pad", CASES)
def test_float32_matches_pytorch(isa: str, n: int, c: int, h: int, w: int, groups: int, pad: int) -> None:
    g = torch.Generator().manual_seed(n * 1000 + c + h + w)
    x = torch.randn(n, c, h, w, generator=g) * 3 + 1.5  # off-centre, so the statistics matter
    gamma, beta = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
    out = group_norm_silu_cpu(x, gamma, beta, groups, 1e-5, pad)
    assert out.shape == (n, c, h + 2 * pad, w + 2 * pad)
    assert rel_l2(out, reference(x, gamma, beta, groups, pad)) < 1e-6


def test_float16_storage(isa: str) -> None:
    g = torch.Generator().manual_seed(3)
    x, gamma, beta = torch.randn(2, 16, 11, 19, generator=g), torch.rand(16, generator=g) + 0.5, torch.randn(16, generator=g)
    out = group_norm_silu_cpu(x.half(), gamma.half(), beta.half(), 4, 1e-5, 1)
    assert out.dtype == np.float16
    ref = reference(x.half().float(), gamma.half().float(), beta.half().float(), 4, 1)
    assert rel_l2(out, ref) < 1e-3  # float16 rounding of the output


def test_large_offset_keeps_variance_exact(isa: str) -> None:
    """A mean 1e4 standard deviations away: the shifted one-pass moments must not cancel."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 8, 16, 40, generator=g) + 1e4
    gamma, beta = torch.ones(8), torch.zeros(8)
    assert rel_l2(group_norm_silu_cpu(x, gamma, beta, 2), reference(x, gamma, beta, 2, 0)) < 1e-3


def test_constant_group_and_extremes(isa: str) -> None:
    x = torch.zeros(1, 4, 3, 20)
    x[0, 2:] = torch.tensor([-1e30, 1e30]).repeat(30)[:60].view(3, 20)  # huge values: no inf/NaN from SiLU
    out = group_norm_silu_cpu(x, torch.ones(4), torch.full((4,), 0.25), 2)
    assert np.isfinite(out).all()
    assert np.allclose(out[0, :2], 0.25 * torch.sigmoid(torch.tensor(0.25)).item())  # var 0: beta only


def test_nan_propagates(isa: str) -> None:
    x = torch.randn(1, 4, 5, 5)
    x[0, 1, 2, 2] = float("nan")
    out = group_norm_silu_cpu(x, torch.ones(4), torch.zeros(4), 2)
    assert np.isnan(out[0, :2]).all() and np.isfinite(out[0, 2:]).all()  # only the NaN's group


def test_empty_batch() -> None:
    assert group_norm_silu_cpu(np.zeros((0, 4, 3, 3), np.float32), np.ones(4, np.float32),
                               np.zeros(4, np.float32), 2, pad=1).shape == (0, 4, 5, 5)


@pytest.mark.parametrize("groups, pad, h, w, match", [
    (3, 0, 4, 4, "num_groups: expected a positive divisor of the channel count C=8, got 3"),
    (0, 0, 4, 4, "num_groups"),
    (2, 4, 4, 9, r"pad: reflect padding needs 0 <= pad < min\(H, W\) = 4, got 4"),
    (2, -1, 4, 4, "pad"),
    (2, 1 << 40, 4, 4, "pad"),
])  # fmt: skip
def test_bad_arguments_are_refused_with_the_reason(groups: int, pad: int, h: int, w: int, match: str) -> None:
    x = np.zeros((1, 8, h, w), np.float32)
    with pytest.raises(ValueError, match=match):
        group_norm_silu_cpu(x, np.ones(8, np.float32), np.zeros(8, np.float32), groups, pad=pad)


def test_bad_epsilon_and_dtype() -> None:
    x, ones = np.zeros((1, 4, 3, 3), np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="epsilon: expected a finite value >= 0"):
        group_norm_silu_cpu(x, ones, ones, 2, epsilon=float("nan"))
    with pytest.raises(ValueError, match="gamma: expected a \\(4,\\) float32 array"):
        group_norm_silu_cpu(x, ones[:3], ones, 2)
    with pytest.raises(ValueError, match="x: dtype float64 is not supported"):
        group_norm_silu_cpu(x.astype(np.float64), ones, ones, 2)


# ---- the 8-bit form (naf_qgn_silu_forward_cpu) --------------------------------------------------


def _quantize(v: torch.Tensor, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """ONNX QuantizeLinear: round half to even, saturate."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(v.numpy() / scale) + zero_point, info.min, info.max).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("n, c, h, w, groups, pad", CASES)
def test_quantized_matches_dequantize_groupnorm_quantize(isa, dtype, n, c, h, w, groups, pad) -> None:
    """Against the unfused path it replaces: DequantizeLinear, GroupNorm + SiLU + pad in float64,
    QuantizeLinear. Values may differ by one step where a result falls within float32 rounding
    of a rounding boundary; never by more, and almost never at all."""
    rng = np.random.default_rng(n * 100 + c + h + w)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, size=(n, c, h, w)).astype(dtype)
    x_scale, x_zp = 0.037, int(rng.integers(info.min // 2, info.max // 2))
    y_scale, y_zp = 0.021, int(info.min) + 20  # SiLU's output is mostly positive
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    out = group_norm_silu_quantized_cpu(x, x_scale, x_zp, gamma, beta, groups, y_scale, y_zp, pad=pad)
    assert out.shape == (n, c, h + 2 * pad, w + 2 * pad) and out.dtype == dtype
    real = torch.from_numpy((x.astype(np.float64) - x_zp) * np.float32(x_scale))
    expected = _quantize(reference(real, gamma, beta, groups, pad), y_scale, y_zp, dtype)
    diff = np.abs(out.astype(np.int32) - expected.astype(np.int32))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_quantized_refuses_bad_quantization() -> None:
    x = np.zeros((1, 8, 4, 4), np.uint8)
    ones = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="x_scale: expected a finite value > 0"):
        group_norm_silu_quantized_cpu(x, 0.0, 0, ones, ones, 2, 0.1, 0)
    with pytest.raises(ValueError, match=r"y_zero_point: expected 0\.\.255, got 300"):
        group_norm_silu_quantized_cpu(x, 0.1, 0, ones, ones, 2, 0.1, 300)
    with pytest.raises(ValueError, match="num_groups"):
        group_norm_silu_quantized_cpu(x, 0.1, 0, ones, ones, 3, 0.1, 0)

"""The native CPU kernel (libnaf_core, via ctypes) against the PyTorch reference op.

Every test runs on each instruction-set variant of the kernel this machine can execute
(NAF_CSNA_CPU_ISA forces a lower one), so the AVX-512, AVX2 and portable code are all checked.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from naf_export.attention import cross_scale_neighborhood_attention, neighborhood_index
from naf_export.native import cross_scale_attention_cpu

pytestmark = pytest.mark.usefixtures("core_library")  # fixtures `core_library`, `isa`: conftest.py


def make_inputs(seed: int, b: int, dq_all: int, c_all: int, in_hw: tuple[int, int], out_hw: tuple[int, int]):
    g = torch.Generator().manual_seed(seed)
    (h, w), (big_h, big_w) = in_hw, out_hw
    query = torch.randn(b, dq_all, big_h, big_w, generator=g)
    key = torch.randn(b, dq_all, h, w, generator=g)
    value = torch.randn(b, c_all, h, w, generator=g)
    return query, key, value


def run_native(query, key, value, heads: int, k: int = 9, scale: float | None = None, threads: int = 0):
    (h, w), (big_h, big_w) = key.shape[2:], query.shape[2:]
    rows = neighborhood_index(h, big_h, k).to(torch.int32)
    cols = neighborhood_index(w, big_w, k).to(torch.int32)
    if scale is None:
        scale = (query.shape[1] // heads) ** -0.5
    return torch.from_numpy(cross_scale_attention_cpu(query, key, value, rows, cols, heads, scale, threads))


def assert_close_f32(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape and out.dtype == torch.float32
    out64, ref64 = out.double(), ref.double()
    scale = ref64.abs().max().item()
    max_abs = (out64 - ref64).abs().max().item()
    rel_l2 = ((out64 - ref64).norm() / ref64.norm()).item()
    assert max_abs < 1e-5 * scale, f"max abs diff {max_abs} vs output scale {scale}"
    assert rel_l2 < 1e-6, f"rel_l2 {rel_l2}"


# (B, Dq, C, heads, (h, w), (H, W), K)
CASES = [
    (1, 16, 16, 1, (9, 9), (9, 9), 9),  # smallest legal maps, no upsampling
    (1, 32, 48, 2, (9, 9), (36, 27), 9),  # smallest maps, integer ratios 4 and 3
    (2, 32, 48, 4, (16, 15), (41, 70), 9),  # non-integer ratios 2.56 and 4.67, batch 2
    (1, 64, 96, 4, (12, 20), (48, 80), 9),  # rectangular, ratio 4, e=24 != dq=16
    (1, 64, 96, 2, (28, 28), (448, 448), 9),  # ratio 16 as in the release benchmark (2 heads)
    (1, 16, 40, 2, (13, 11), (100, 37), 9),  # ratio 7.7 x 3.4, e=20 != dq=8
    (2, 8, 8, 1, (10, 9), (21, 9), 3),  # small kernel
    (1, 12, 30, 3, (7, 8), (50, 33), 5),  # K=5, 3 heads
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}-Dq{c[1]}-C{c[2]}-n{c[3]}-{c[4]}to{c[5]}-K{c[6]}")
def test_float32_matches_reference(case, isa: str) -> None:
    b, dq_all, c_all, heads, in_hw, out_hw, k = case
    query, key, value = make_inputs(0, b, dq_all, c_all, in_hw, out_hw)
    ref = cross_scale_neighborhood_attention(query, key, value, heads, k)
    assert_close_f32(run_native(query, key, value, heads, k), ref)


@pytest.mark.parametrize("seed", range(10))
def test_float32_random_shapes(seed: int, isa: str) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.choice([3, 5, 9]))
    heads = int(rng.choice([1, 2, 4]))
    dq, e = int(rng.choice([4, 8, 16])), int(rng.choice([4, 8, 12, 24]))
    h, w = (int(x) for x in rng.integers(k, k + 12, size=2))
    big_h, big_w = int(rng.integers(h, 5 * h)), int(rng.integers(w, 5 * w))
    b = int(rng.integers(1, 3))
    query, key, value = make_inputs(seed, b, heads * dq, heads * e, (h, w), (big_h, big_w))
    scale = float(rng.uniform(0.05, 1.0))
    threads = int(rng.integers(0, 4))
    ref = cross_scale_neighborhood_attention(query, key, value, heads, k, scale)
    assert_close_f32(run_native(query, key, value, heads, k, scale, threads), ref)


def test_thread_count_does_not_change_result(isa: str) -> None:
    query, key, value = make_inputs(3, 2, 32, 48, (16, 15), (41, 70))
    outs = [run_native(query, key, value, 4, threads=t) for t in (1, 2, 3, 0)]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


@pytest.mark.parametrize("case", [CASES[2], CASES[3], CASES[5]], ids=["nonint", "rect", "ratio7"])
def test_float16_matches_reference(case, isa: str) -> None:
    b, dq_all, c_all, heads, in_hw, out_hw, k = case
    query, key, value = (t.half() for t in make_inputs(1, b, dq_all, c_all, in_hw, out_hw))
    out = run_native(query, key, value, heads, k)
    assert out.dtype == torch.float16 and out.shape == (b, c_all, *out_hw)
    ref = cross_scale_neighborhood_attention(query.float(), key.float(), value.float(), heads, k)
    cosine = torch.nn.functional.cosine_similarity(out.double().flatten(), ref.double().flatten(), dim=0).item()
    assert cosine > 0.999
    # Only the final rounding to float16 (half an ulp, <= 2^-11 relative) and float32 summation
    # order (absolute, ~1e-7 of the output scale; visible where outputs cancel to near 0) differ.
    ref64 = ref.double()
    bound = ref64.abs() * 2**-11 + 1e-6 * ref64.abs().max() + 2**-25
    assert ((out.double() - ref64).abs() <= bound).all()


def _identity_tables(size: int) -> np.ndarray:
    return np.arange(size, dtype=np.int32).reshape(size, 1)


def test_float16_round_trip_every_bit_pattern(isa: str) -> None:
    """K=1 with identity tables gives out = 1.0 * v exactly: every binary16 pattern (subnormals,
    infinities, NaNs included) must survive the half -> float -> half conversions."""
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    value = bits.view(np.float16).reshape(1, 256, 16, 16)
    query = np.zeros((1, 1, 16, 16), np.float16)
    key = np.zeros((1, 1, 16, 16), np.float16)
    out = cross_scale_attention_cpu(query, key, value, _identity_tables(16), _identity_tables(16), 1, 1.0)
    out_bits, in_bits = out.view(np.uint16).ravel(), bits
    is_nan = np.isnan(value.ravel())
    assert np.isnan(out.ravel()[is_nan]).all()
    # Sums start from +0, so -0 comes out as +0 (as in the reference); all else bit-exact.
    nonzero = ~is_nan & (value.ravel() != 0)
    np.testing.assert_array_equal(out_bits[nonzero], in_bits[nonzero])
    assert (out.ravel()[value.ravel() == 0] == 0).all()


def test_float16_rounds_to_nearest_even(isa: str) -> None:
    """Two keys with logit 0 and seven with a very negative one: out = (v1 + v2) / 2 computed
    exactly in float32 (same-binade halves), so the only rounding is float32 -> float16, which
    must be round-to-nearest-even (ties included) in every range, subnormals too."""
    rng = np.random.default_rng(7)
    channels = 4096
    exponents = rng.integers(-24, 15, size=channels)
    mags = rng.integers(1024, 2048, size=(2, channels)) * np.exp2(exponents - 10.0)
    v12 = (mags * rng.choice([-1.0, 1.0], size=(1, channels))).astype(np.float16)  # same sign and binade
    value = np.zeros((1, channels, 3, 3), np.float16)
    value[0, :, 0, 0], value[0, :, 1, 1] = v12[0], v12[1]
    key = np.full((1, 1, 3, 3), -60000.0, np.float16)
    key[0, 0, 0, 0] = key[0, 0, 1, 1] = 0.0
    query = np.ones((1, 1, 3, 3), np.float16)
    tables = np.array([[0, 1, 2]] * 3, np.int32)  # every pixel sees all 9 keys
    out = cross_scale_attention_cpu(query, key, value, tables, tables, 1, 1.0)[:, :, 1, 2]
    expected = ((v12[0].astype(np.float32) + v12[1].astype(np.float32)) * np.float32(0.5)).astype(np.float16)
    np.testing.assert_array_equal(out.reshape(channels).view(np.uint16), expected.view(np.uint16))


@pytest.mark.parametrize("sizes", [(28, 28, 56, 56, 14, 14), (20, 17, 45, 73, 12, 8)], ids=["ratio2", "nonint"])
def test_non_finite_values_stay_in_their_windows(sizes, isa: str) -> None:
    """An inf in value (float16 overflow, say) must reach exactly the pixels whose K*K window
    holds it (DESIGN.md section 2 sums over the window only), also where the kernel would
    otherwise compute blocks of pixels against a shared union of keys (0 * inf = NaN). The
    expected mask comes from the index tables; the PyTorch reference must give the same."""
    h, w, big_h, big_w, r0, c0 = sizes
    query, key, value = make_inputs(5, 1, 64, 64, (h, w), (big_h, big_w))  # wide heads: blocks merge runs
    finite_value = value.clone()
    value[0, :, r0, c0] = float("inf")
    out = run_native(query, key, value, 1)
    attends = (neighborhood_index(h, big_h) == r0).any(1)[:, None] & (neighborhood_index(w, big_w) == c0).any(1)[None, :]
    assert attends.any() and not attends.all()
    assert torch.isposinf(out[0][:, attends]).all()
    assert torch.isfinite(out[0][:, ~attends]).all()
    ref = cross_scale_neighborhood_attention(query, key, finite_value, 1)
    assert_close_f32(torch.where(attends, 0.0, out), torch.where(attends, 0.0, ref))
    poisoned_ref = cross_scale_neighborhood_attention(query, key, value, 1)
    assert torch.equal(torch.isposinf(poisoned_ref[0]), torch.isposinf(out[0]))
    assert torch.isfinite(poisoned_ref[0][:, ~attends]).all()
    assert_close_f32(torch.where(attends, 0.0, poisoned_ref), torch.where(attends, 0.0, ref))


# (which input, where, value): a NaN/inf reaching the logits poisons whole pixels (every channel
# of the head), as softmax does in PyTorch; the kernel's vector max and exp must not drop it.
POISONS = [
    ("query", (0, 3, 20, 33), float("nan")),  # one pixel of head 0
    ("key", (0, 3, 7, 9), float("nan")),  # every pixel whose window holds that key
    ("key", (0, 9, 7, 9), float("inf")),  # +inf logits where q > 0, -inf where q < 0
    ("key", (0, 9, 7, 9), float("-inf")),
    ("scale", None, float("nan")),  # every pixel
    ("scale", None, float("inf")),
    ("value", (0, 10, 3, 4), float("nan")),  # that channel, where the window holds it
]


@pytest.mark.parametrize("poison", POISONS, ids=lambda p: f"{p[0]}-{p[2]}")
def test_non_finite_inputs_poison_exactly_what_the_reference_poisons(poison, isa: str) -> None:
    name, where, bad = poison
    query, key, value = make_inputs(3, 1, 16, 24, (20, 22), (47, 60))  # 2 heads, e=12 != dq=8
    inputs = {"query": query, "key": key, "value": value}
    scale = 0.35
    if name == "scale":
        scale = bad
    else:
        inputs[name][where] = bad
    ref = cross_scale_neighborhood_attention(*inputs.values(), 2, 9, scale)
    out = run_native(*inputs.values(), 2, scale=scale)
    poisoned = ~torch.isfinite(ref)
    assert poisoned.any()
    assert torch.equal(~torch.isfinite(out), poisoned)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    if not poisoned.all():  # a non-finite scale poisons everything
        assert_close_f32(torch.where(poisoned, 0.0, out), torch.where(poisoned, 0.0, ref))


# ---------------------------------------------------------------------------------------------
# Malformed calls: ValueError whose message names the offending argument.


def _valid(h: int = 10, w: int = 9, big_h: int = 21, big_w: int = 20, dq_all: int = 8, c_all: int = 8, k: int = 9):
    query, key, value = make_inputs(0, 1, dq_all, c_all, (h, w), (big_h, big_w))
    rows = neighborhood_index(h, big_h, k).to(torch.int32).numpy().copy()
    cols = neighborhood_index(w, big_w, k).to(torch.int32).numpy().copy()
    return query.numpy(), key.numpy(), value.numpy(), rows, cols


def test_row_index_out_of_range() -> None:
    query, key, value, rows, cols = _valid()
    rows[12, 3] = 10
    with pytest.raises(ValueError, match=r"row_index: entry \[12, 3\] = 10 is outside \[0, h=10\)"):
        cross_scale_attention_cpu(query, key, value, rows, cols, 2, 0.5)


def test_col_index_negative() -> None:
    query, key, value, rows, cols = _valid()
    cols[0, 0] = -1
    with pytest.raises(ValueError, match=r"col_index: entry \[0, 0\] = -1 is outside \[0, w=9\)"):
        cross_scale_attention_cpu(query, key, value, rows, cols, 2, 0.5)


def test_value_channels_not_divisible_by_heads() -> None:
    query, key, value, rows, cols = _valid(c_all=383 * 1)
    with pytest.raises(ValueError, match=r"value: channel count 383 is not divisible by num_heads=4"):
        cross_scale_attention_cpu(query, key, value, rows, cols, 4, 0.5)


def test_query_channels_not_divisible_by_heads() -> None:
    query, key, value, rows, cols = _valid(dq_all=6, c_all=8)
    with pytest.raises(ValueError, match=r"query: channel count 6 is not divisible by num_heads=4"):
        cross_scale_attention_cpu(query, key, value, rows, cols, 4, 0.5)


def test_map_smaller_than_kernel() -> None:
    query, key, value, rows, cols = _valid(h=10, w=9)
    key, value = key[:, :, :, :5], value[:, :, :, :5]  # w = 5 < K = 9; tables still in range
    cols = np.minimum(cols, 4)
    with pytest.raises(ValueError, match=r"key: spatial size \(h=10, w=5\) is smaller than kernel_size=9"):
        cross_scale_attention_cpu(query, key, value, rows, cols, 2, 0.5)


def test_output_smaller_than_input() -> None:
    query, key, value, rows, cols = _valid()
    query, rows = query[:, :, :8], rows[:8]
    with pytest.raises(ValueError, match=r"query: spatial size \(H=8, W=20\) is smaller than the key's"):
        cross_scale_attention_cpu(query, key, value, rows, cols, 2, 0.5)


def test_even_kernel_and_bad_heads() -> None:
    query, key, value, rows, cols = _valid()
    with pytest.raises(ValueError, match=r"kernel_size must be odd, got 8"):
        cross_scale_attention_cpu(query, key, value, rows[:, :8], cols[:, :8], 2, 0.5)
    with pytest.raises(ValueError, match=r"num_heads must be >= 1, got 0"):
        cross_scale_attention_cpu(query, key, value, rows, cols, 0, 0.5)


def test_binding_checks_what_the_abi_cannot_see() -> None:
    query, key, value, rows, cols = _valid()
    with pytest.raises(ValueError, match=r"row_index: expected int32"):
        cross_scale_attention_cpu(query, key, value, rows.astype(np.int64), cols, 2, 0.5)
    with pytest.raises(ValueError, match=r"key: dtype float16 differs"):
        cross_scale_attention_cpu(query, key.astype(np.float16), value, rows, cols, 2, 0.5)
    with pytest.raises(ValueError, match=r"value: shape"):
        cross_scale_attention_cpu(query, key, value[:, :, :5], rows, cols, 2, 0.5)
    with pytest.raises(ValueError, match=r"row_index: has 20 rows, expected H=21"):
        cross_scale_attention_cpu(query, key, value, rows[:20], cols, 2, 0.5)


def test_streamed_and_cached_output_paths_agree(isa: str) -> None:
    """float32 output on 64-byte aligned planes with whole-vector rows goes out through
    non-temporal stores; any other buffer through ordinary ones. Same bits either way."""
    from naf_export.native import aligned_empty

    query, key, value = make_inputs(7, 1, 8, 12, (10, 10), (160, 160))
    rows = neighborhood_index(10, 160).to(torch.int32)
    streamed = aligned_empty((1, 12, 160, 160))
    raw = aligned_empty((1 * 12 * 160 * 160 + 1,))
    cached = raw[1:].reshape(1, 12, 160, 160)  # 4 bytes past the boundary: no streaming
    for out in (streamed, cached):
        cross_scale_attention_cpu(query, key, value, rows, rows, 2, 0.3, out=out)
    assert np.array_equal(streamed, cached)
    ref = cross_scale_neighborhood_attention(query, key, value, 2, 9, 0.3)
    assert float((torch.from_numpy(streamed) - ref).norm() / ref.norm()) < 1e-5

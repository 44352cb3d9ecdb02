"""The PyTorch cross-scale attention op against NATTEN, and its index tables against PyTorch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import natten_reference, rel_l2
from naf_export.attention import (
    cross_scale_neighborhood_attention,
    nearest_exact_source,
    neighborhood_index,
)

# (batch, query channels, value channels, heads, h, w, H, W)
SHAPES = [
    (1, 32, 48, 4, 16, 15, 41, 70),  # non-divisible ratios, value head dim != query head dim
    (2, 64, 96, 2, 12, 9, 24, 27),  # batch 2, rectangular, divisible
    (1, 256, 384, 4, 9, 9, 9, 9),  # smallest legal map, release channel layout (e=96, dq=64)
    (1, 256, 384, 4, 10, 11, 37, 23),  # release channels, odd ratios
    (2, 16, 8, 2, 9, 13, 30, 13),  # value head dim < query head dim, W == w
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_natten(shape):
    b, dq, c, heads, h, w, out_h, out_w = shape
    gen = torch.Generator().manual_seed(sum(shape))
    q = torch.randn(b, dq, out_h, out_w, generator=gen)
    k = torch.randn(b, dq, h, w, generator=gen)
    v = torch.randn(b, c, h, w, generator=gen)
    ours = cross_scale_neighborhood_attention(q, k, v, heads)
    ref = natten_reference(q, k, v, heads)
    assert ours.shape == (b, c, out_h, out_w)
    assert (ours - ref).abs().max().item() < 1e-5


@settings(max_examples=12, deadline=None)
@given(
    b=st.integers(1, 2),
    heads=st.sampled_from([1, 2, 4]),
    dq_per_head=st.sampled_from([8, 16, 32]),  # NATTEN flex: powers of two >= 8
    e_per_head=st.sampled_from([3, 8, 20]),
    h=st.integers(9, 20),
    w=st.integers(9, 20),
    ratio_h=st.floats(1.0, 4.0),
    ratio_w=st.floats(1.0, 4.0),
    seed=st.integers(0, 2**16),
)
def test_matches_natten_random_shapes(b, heads, dq_per_head, e_per_head, h, w, ratio_h, ratio_w, seed):
    out_h, out_w = max(h, round(h * ratio_h)), max(w, round(w * ratio_w))
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, heads * dq_per_head, out_h, out_w, generator=gen) * 2
    k = torch.randn(b, heads * dq_per_head, h, w, generator=gen)
    v = torch.randn(b, heads * e_per_head, h, w, generator=gen)
    ours = cross_scale_neighborhood_attention(q, k, v, heads)
    assert (ours - natten_reference(q, k, v, heads)).abs().max().item() < 1e-5


def test_small_chunks_give_identical_result(monkeypatch):
    import naf_export.attention as attention

    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 8, 40, 33, generator=gen), torch.randn(1, 8, 10, 11, generator=gen),
               torch.randn(1, 12, 10, 11, generator=gen))
    whole = cross_scale_neighborhood_attention(q, k, v, 2)
    monkeypatch.setattr(attention, "_CHUNK_ELEMENTS", 1)  # one output row per chunk
    assert torch.equal(cross_scale_neighborhood_attention(q, k, v, 2), whole)


def test_half_precision_storage_accumulates_in_float32():
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 16, 30, 30, generator=gen), torch.randn(1, 16, 10, 10, generator=gen),
               torch.randn(1, 24, 10, 10, generator=gen))
    ref = cross_scale_neighborhood_attention(q, k, v, 2)
    out = cross_scale_neighborhood_attention(q.half(), k.half(), v.half(), 2)
    assert out.dtype == torch.float16
    assert rel_l2(out.float(), ref) < 2e-3


def test_source_mapping_is_pytorch_float32_nearest_exact_for_all_sizes():
    """Every (h, H) with 1 <= h <= 128 and h <= H <= 1024, read back from interpolate on a
    multi-channel float32 map along the width axis (the table is built along the height axis)."""
    for h in range(1, 129):
        x = torch.arange(h, dtype=torch.float32).view(1, 1, 1, h).expand(2, 3, 2, h).contiguous()
        for out in range(h, 1025):
            mapped = F.interpolate(x, size=(3, out), mode="nearest-exact")[1, 2, 2].long()
            assert torch.equal(nearest_exact_source(h, out), mapped), (h, out)


def test_neighborhood_index_window_rule():
    """Spot-check the dilated-window rule on a divisible and a non-divisible axis."""
    # 28 -> 448 (dilation 16): all 16 rows of one low-resolution row share its window.
    idx = neighborhood_index(28, 448)
    assert idx.shape == (448, 9)
    assert torch.equal(idx[0], torch.arange(9))  # clamped at the top edge
    assert torch.equal(idx[16 * 14 + 5], torch.arange(10, 19))  # centred on low-res row 14
    assert torch.equal(idx[447], torch.arange(19, 28))  # clamped at the bottom edge
    # 16 -> 41 (dilation 2): windows live on one parity class of the upsampled axis.
    src = nearest_exact_source(16, 41)
    idx = neighborhood_index(16, 41)
    for i in range(41):
        g, d = i % 2, 2
        length = -(-(41 - g) // d)
        start = min(max(i // d - 4, 0), length - 9)
        assert idx[i].tolist() == [src[g + d * (start + a)].item() for a in range(9)]
    assert int(idx.min()) >= 0 and int(idx.max()) < 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(h=8), "key: low-resolution size must be at least kernel_size=9"),
        (dict(w=5), "key: low-resolution size must be at least kernel_size=9"),
        (dict(out_h=10), "query: output size must be at least"),
        (dict(c=30), "value: channel count 30 is not divisible by num_heads=4"),
        (dict(dq=30), "query: channel count 30 is not divisible by num_heads=4"),
        (dict(kb=2), "key/value: batch size must match"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, message):
    p = dict(b=1, dq=32, c=32, h=12, w=12, out_h=24, out_w=24, kb=1)
    p.update(kwargs)
    q = torch.randn(p["b"], p["dq"], p["out_h"], p["out_w"])
    k = torch.randn(p["kb"], p["dq"], p["h"], p["w"])
    v = torch.randn(p["kb"], p["c"], p["h"], p["w"])
    with pytest.raises(ValueError, match=message):
        cross_scale_neighborhood_attention(q, k, v, 4)


def test_non_4d_and_integer_inputs_rejected():
    q, k, v = torch.randn(1, 8, 20, 20), torch.randn(1, 8, 10, 10), torch.randn(1, 8, 10, 10)
    with pytest.raises(ValueError, match=r"query: expected a 4-D tensor"):
        cross_scale_neighborhood_attention(q[0], k, v, 2)
    with pytest.raises(ValueError, match=r"value: expected a floating-point tensor"):
        cross_scale_neighborhood_attention(q, k, v.long(), 2)
    with pytest.raises(ValueError, match=r"kernel_size: expected a positive odd int"):
        cross_scale_neighborhood_attention(q, k, v, 2, kernel_size=4)


def test_cached_index_tables_serve_autograd_after_inference_mode() -> None:
    """NAF's index tables are cached per shape and device; one first built under inference_mode
    must still serve a later call that autograd records (it saves the tables for backward)."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 8, 37, 41, generator=gen)
    k = torch.randn(1, 8, 13, 15, generator=gen)
    v = torch.randn(1, 4, 13, 15, generator=gen)
    with torch.inference_mode():
        cross_scale_neighborhood_attention(q, k, v, 2, 9)
    query = q.clone().requires_grad_()
    cross_scale_neighborhood_attention(query, k, v, 2, 9).sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()

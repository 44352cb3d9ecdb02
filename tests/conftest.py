"""Shared oracles and helpers for the test suite."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F


def natten_reference(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int, kernel_size: int = 9
) -> torch.Tensor:
    """The release's computation: nearest-exact upsample k and v, then NATTEN's dilated na2d
    (flex-fna backend, CPU). NATTEN's flex backend needs equal head dims for q and v, so v is
    split into zero-padded chunks of the query head dim (attention is linear in v)."""
    natten = pytest.importorskip("natten", reason="natten (the NATTEN oracle) is not installed")
    b, dq_all, out_h, out_w = query.shape
    in_h, in_w = key.shape[2:]
    c_all = value.shape[1]
    dq, e = dq_all // num_heads, c_all // num_heads
    k_up = F.interpolate(key, size=(out_h, out_w), mode="nearest-exact")
    v_up = F.interpolate(value, size=(out_h, out_w), mode="nearest-exact")

    def heads_last(t: torch.Tensor, d: int) -> torch.Tensor:  # B (n d) H W -> B H W n d
        return t.reshape(b, num_heads, d, out_h, out_w).permute(0, 3, 4, 1, 2).contiguous()

    q, k, v = heads_last(query, dq), heads_last(k_up, dq), heads_last(v_up, e)
    chunks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c0 in range(0, e, dq):
            part = v[..., c0 : c0 + dq]
            pad = dq - part.shape[-1]
            out = natten.na2d(
                q, k, F.pad(part, (0, pad)).contiguous(), kernel_size=kernel_size,
                dilation=(out_h // in_h, out_w // in_w), backend="flex-fna",
            )
            chunks.append(out[..., : dq - pad])
    out = torch.cat(chunks, dim=-1)
    return out.permute(0, 3, 4, 1, 2).reshape(b, c_all, out_h, out_w)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def core_library() -> None:
    """libnaf_core, built on demand (tests/native_build.py)."""
    from native_build import library

    library("naf_core")


@pytest.fixture(params=["native", "avx2", "generic"])
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each instruction-set variant of the native CPU kernels: the best this machine runs, then
    the lower ones forced with NAF_CSNA_CPU_ISA (read by the library on every call)."""
    if request.param != "native":
        monkeypatch.setenv("NAF_CSNA_CPU_ISA", request.param)
    return request.param

"""The axial RoPE kernel of libnaf_core (via ctypes) against the model's RotaryEmbedding2d, on every
instruction-set variant this machine runs. tests/test_asan.py runs this file again against a
sanitizer build."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from naf_export.model import RotaryEmbedding2d
from naf_export.native import axial_rope_cpu
from naf_export.onnx_export import rope_tables
from op_feeds import rel_l2

pytestmark = pytest.mark.usefixtures("core_library")  # fixtures `core_library`, `isa`: conftest.py


@pytest.mark.parametrize("b, d, heads, h, w", [(1, 256, 4, 28, 28), (2, 32, 2, 9, 37), (1, 16, 4, 5, 3), (1, 64, 1, 17, 48)])
def test_float32_matches_the_model(isa: str, b: int, d: int, heads: int, h: int, w: int) -> None:
    rope = RotaryEmbedding2d(d, heads)
    x = torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(d + h + w))
    with torch.no_grad():
        ref = rope(x)
    out = axial_rope_cpu(x, *rope_tables(rope, (h, w)), heads)
    assert rel_l2(out, ref) < 1e-6


def test_float16_storage(isa: str) -> None:
    rope = RotaryEmbedding2d(32, 2)
    x = torch.randn(1, 32, 7, 20, generator=torch.Generator().manual_seed(1))
    out = axial_rope_cpu(x.half(), *(t.astype(np.float16) for t in rope_tables(rope, (7, 20))), 2)
    with torch.no_grad():
        ref = rope(x.half().float())
    assert out.dtype == np.float16 and rel_l2(out, ref) < 1e-3


def test_empty_batch() -> None:
    tables = rope_tables(RotaryEmbedding2d(16, 2), (3, 3))
    assert axial_rope_cpu(np.zeros((0, 16, 3, 3), np.float32), *tables, 2).shape == (0, 16, 3, 3)


@pytest.mark.parametrize("d, heads, table_shape, match", [
    (16, 3, None, "num_heads: expected a divisor of D=16 leaving a head size that is a multiple of 4, got 3"),
    (24, 4, None, "num_heads: expected a divisor of D=24 leaving a head size that is a multiple of 4, got 4"),
    (16, 2, (2, 5), r"cos_h: expected a \(2, 5\) float32 array, got \(2, 4\)"),
])  # fmt: skip
def test_bad_arguments_are_refused(d: int, heads: int, table_shape, match: str) -> None:
    x = np.zeros((1, d, 5, 6), np.float32)
    tables = [np.zeros((2, 4), np.float32), np.zeros((2, 5), np.float32), np.zeros((2, 6), np.float32),
              np.zeros((2, 6), np.float32)]
    with pytest.raises(ValueError, match=match):
        axial_rope_cpu(x, *tables, heads)

"""naf_export.cuda_attention: NAF's attention as one PyTorch custom op (torch.library).

What runs here, without a GPU: the op's schema, fake (meta) implementation and CPU implementation
(torch.library.opcheck), that torch.export and torch.compile see it as one node, that its CPU
implementation is the pure PyTorch op exactly, the NAF_EXPORT_CUDA_ATTENTION switch and its errors,
and the nvcc build of libnaf_cuda the op loads on CUDA machines (compiled, its entry point and
static CUDA runtime checked). The op on a GPU is checked by scripts/gpu_check.py.
"""

from __future__ import annotations

import ctypes
import pathlib
import warnings

import pytest
import torch

from naf_export import cuda_attention, native
from naf_export.attention import cross_scale_neighborhood_attention, neighborhood_index
from native_build import nvcc

OP = torch.ops.naf_export.cross_scale_attention


def _inputs(dtype=torch.float32, b=2, dq=16, c=8, out=(30, 37), low=(11, 12), k=9):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, dq, *out, generator=gen).to(dtype)
    key = torch.randn(b, dq, *low, generator=gen).to(dtype)
    v = torch.randn(b, c, *low, generator=gen).to(dtype)
    rows = neighborhood_index(low[0], out[0], k)
    cols = neighborhood_index(low[1], out[1], k)
    return q, key, v, rows, cols


def test_opcheck_schema_fake_and_cpu_implementation() -> None:
    q, k, v, rows, cols = _inputs()
    results = torch.library.opcheck(OP.default, (q, k, v, rows, cols, 4, 0.5))
    assert all(result == "SUCCESS" for result in results.values()), results


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cpu_implementation_is_the_pytorch_op(dtype) -> None:
    q, k, v, rows, cols = _inputs(dtype)
    # Arbitrary valid tables too (the contract's inputs 3 and 4), not only NAF's.
    rows = torch.flip(rows, dims=[0]).contiguous()
    expected = cross_scale_neighborhood_attention(q, k, v, 4, 9, 0.3, row_index=rows, col_index=cols)
    got = OP(q, k, v, rows.int(), cols.int(), 4, 0.3)
    assert got.dtype == dtype and got.shape == (2, 8, 30, 37)
    assert torch.equal(got, expected)


def test_fake_implementation_gives_the_output_shape() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = _inputs(torch.float16)
    with FakeTensorMode() as mode:
        q, k, v, rows, cols = (mode.from_tensor(t) for t in real)
        out = OP(q, k, v, rows, cols, 4, 0.5)
    assert out.shape == (2, 8, 30, 37) and out.dtype == torch.float16


def test_torch_export_and_compile_see_one_op() -> None:
    class Attend(torch.nn.Module):
        def forward(self, q, k, v, rows, cols):
            return OP(q, k, v, rows, cols, 4, 0.5)

    inputs = _inputs()
    program = torch.export.export(Attend(), inputs)
    calls = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert calls == [OP.default], calls
    assert torch.equal(program.module()(*inputs), Attend()(*inputs))

    compiled = torch.compile(Attend(), fullgraph=True, backend="eager")
    assert torch.equal(compiled(*inputs), Attend()(*inputs))


def test_mode_switch(monkeypatch) -> None:
    monkeypatch.setenv(cuda_attention.MODE_ENV, "fast")
    with pytest.raises(ValueError, match="NAF_EXPORT_CUDA_ATTENTION: expected one of auto, kernel, reference"):
        cuda_attention.kernel_mode()
    monkeypatch.setenv(cuda_attention.MODE_ENV, "reference")
    assert cuda_attention.use_cuda_kernel() is False
    monkeypatch.setenv(cuda_attention.MODE_ENV, "Kernel")
    assert cuda_attention.kernel_mode() == "kernel"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")
def test_without_a_gpu_auto_warns_once_and_kernel_mode_refuses(monkeypatch) -> None:
    cuda_attention.cuda_library.cache_clear()
    cuda_attention._auto_kernel_available.cache_clear()
    monkeypatch.setenv(native.LIB_DIR_ENV, str(pathlib.Path(__file__).parent))  # no libnaf_cuda there
    monkeypatch.setenv(cuda_attention.MODE_ENV, "auto")
    with pytest.warns(UserWarning, match="pure PyTorch op .*no CUDA device"):
        assert cuda_attention.use_cuda_kernel() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        assert cuda_attention.use_cuda_kernel() is False
    monkeypatch.setenv(cuda_attention.MODE_ENV, "kernel")
    with pytest.raises(RuntimeError, match="no CUDA device; libnaf_cuda.so not found"):
        cuda_attention.use_cuda_kernel()
    cuda_attention.cuda_library.cache_clear()
    cuda_attention._auto_kernel_available.cache_clear()


def test_nvcc_builds_the_library_the_op_loads(tmp_path) -> None:
    compiler = nvcc()
    if compiler is None:
        pytest.skip("nvcc not found: libnaf_cuda cannot be compiled here")
    with pytest.raises(ValueError, match="arch: expected a compute capability"):
        cuda_attention.build_kernel_library("sm_90", compiler, tmp_path)
    library = cuda_attention.build_kernel_library("87", compiler, tmp_path)  # Jetson Orin
    assert library.is_file() and library.parent.name.startswith("sm_87-")
    assert cuda_attention.build_kernel_library("87", compiler, tmp_path) == library  # cached
    assert "naf_csna_forward_cuda" in native.elf_exported_symbols(library)
    needed = library.read_bytes()
    assert b"libcudart.so" not in needed, "the CUDA runtime must be linked statically"
    assert hasattr(ctypes.CDLL(str(library)), "naf_csna_forward_cuda")  # loads without a GPU
    # The experimental kernel variant scripts/gpu_check.py compares with the default compiles too.
    variant = cuda_attention.build_kernel_library("87", compiler, tmp_path, ("NAF_CSNA_PADDED_STAGING=1",))
    assert variant != library and "naf_csna_forward_cuda" in native.elf_exported_symbols(variant)


def test_gpu_check_script_dry_run(tmp_path) -> None:
    """scripts/gpu_check.py, the one device check, run on the CPU at tiny sizes: every section's
    code runs (the TensorRT harness is compiled where nvcc and the headers are), reports are written."""
    import json
    import os
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    result = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--dry-run-cpu"],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ))  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["dry_run"] is True
    assert {"correctness", "timing", "naf end to end", "tensorrt plugin", "runtime preprocessing"} <= set(data["sections"])
    assert not any(row.get("passed") is False for rows in data["sections"].values() for row in rows)
    assert "Dry run on a CPU" in (tmp_path / "gpu_check.md").read_text()


def test_reference_op_computes_in_float32_under_autocast() -> None:
    """Under autocast the PyTorch op still computes in float32 (as documented): the same output as
    without autocast. (On CUDA, autocast's float16 matmul next to its float32 softmax made the
    op's scatter_add_ fail outright.)"""
    q, k, v, rows, cols = _inputs()
    expected = cross_scale_neighborhood_attention(q, k, v, 4, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cross_scale_neighborhood_attention(q, k, v, 4, 9)
    assert got.dtype == torch.float32 and torch.equal(got, expected)

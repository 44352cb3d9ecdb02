"""NAF's attention on CUDA tensors through the project's CUDA kernel, as one PyTorch operator.

``torch.ops.naf_export.cross_scale_attention(query, key, value, row_index, col_index, num_heads,
scale)`` is a ``torch.library`` custom op: on CUDA tensors it runs ``naf_csna_forward_cuda``
(plugins/core/src/cross_scale_attention.cu, the kernel the TensorRT plugin runs) on PyTorch's
current stream; on every other device it runs the pure PyTorch op, which stays the oracle. Its fake
implementation gives ``torch.compile`` and ``torch.export`` one node with the right output shape.

Inputs as the operator contract (DESIGN.md section 2): ``query`` (B, Dq, H, W), ``key``
(B, Dq, h, w), ``value`` (B, C, h, w), index tables (H, K) / (W, K). On CUDA, float16 inputs use
the kernel's float16-storage path (float32 arithmetic inside); float32 and bfloat16 run in float32;
the output has ``value``'s dtype. No autograd (inference only).

Where the kernel comes from: ``libnaf_cuda.so`` (CMake target ``naf_cuda``, found like the other
native libraries, see ``naf_export.native.find_library``), else it is compiled once with ``nvcc``
for the GPU in use into ``~/.cache/naf-export/cuda/`` (``NAF_EXPORT_CACHE_DIR`` overrides).
``NAF_EXPORT_CUDA_ATTENTION`` chooses what :func:`naf_export.attention.cross_scale_neighborhood_attention`
does with CUDA tensors: ``auto`` (default: this kernel when it can be had, else the PyTorch op with
one warning saying why), ``kernel`` (this kernel or an error), ``reference`` (the PyTorch op).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import warnings

import torch

from . import native

__all__ = ["MODE_ENV", "build_kernel_library", "cross_scale_attention", "cuda_library", "kernel_mode",
           "load_kernel_library", "nvcc_path", "use_cuda_kernel"]

OP_NAME = "naf_export::cross_scale_attention"
MODE_ENV = "NAF_EXPORT_CUDA_ATTENTION"
_MODES = ("auto", "kernel", "reference")
_NAF_DTYPE = {torch.float32: 0, torch.float16: 1}


@torch.library.custom_op(OP_NAME, mutates_args=())
def cross_scale_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    row_index: torch.Tensor,
    col_index: torch.Tensor,
    num_heads: int,
    scale: float,
) -> torch.Tensor:
    """The operator on any device but CUDA: the pure PyTorch op (the oracle)."""
    from .attention import attend

    return attend(query, key, value, row_index.long(), col_index.long(), num_heads, scale)


@cross_scale_attention.register_fake
def _(query, key, value, row_index, col_index, num_heads, scale):
    return value.new_empty((query.shape[0], value.shape[1], query.shape[2], query.shape[3]))


@cross_scale_attention.register_kernel("cuda")
def _(query, key, value, row_index, col_index, num_heads, scale):
    from .attention import check_attention_inputs

    kernel_size = row_index.shape[-1] if row_index.dim() == 2 else -1
    check_attention_inputs(query, key, value, num_heads, kernel_size)
    b, dq, out_h, out_w = query.shape
    for name, table, size in (("row_index", row_index, out_h), ("col_index", col_index, out_w)):
        if tuple(table.shape) != (size, kernel_size) or table.is_floating_point():
            raise ValueError(f"{name}: expected integers of shape ({size}, {kernel_size}), got {tuple(table.shape)}")
    for name, tensor in (("key", key), ("value", value), ("row_index", row_index), ("col_index", col_index)):
        if tensor.device != query.device:
            raise ValueError(f"{name}: expected a tensor on {query.device} like query, got {tensor.device}")
    lib = cuda_library()
    compute = torch.float16 if query.dtype == key.dtype == value.dtype == torch.float16 else torch.float32
    q, k, v = (t.to(compute).contiguous() for t in (query, key, value))
    rows, cols = (t.to(device=query.device, dtype=torch.int32).contiguous() for t in (row_index, col_index))
    shape = native.AttentionShape(b, dq, v.shape[1], out_h, out_w, k.shape[2], k.shape[3], kernel_size, num_heads)
    out = torch.empty((b, v.shape[1], out_h, out_w), dtype=compute, device=query.device)
    if out.numel():
        with torch.cuda.device(query.device):
            stream = torch.cuda.current_stream(query.device).cuda_stream
            rc = lib.naf_csna_forward_cuda(
                ctypes.byref(shape), _NAF_DTYPE[compute], q.data_ptr(), k.data_ptr(), v.data_ptr(),
                rows.data_ptr(), cols.data_ptr(), float(scale), out.data_ptr(), None, ctypes.c_void_p(stream),
            )  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"naf_csna_forward_cuda failed with CUDA error {rc} on {query.device}")
    return out.to(value.dtype)


def kernel_mode() -> str:
    """``NAF_EXPORT_CUDA_ATTENTION``: auto (default), kernel or reference."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in _MODES:
        raise ValueError(f"{MODE_ENV}: expected one of {', '.join(_MODES)}, got {mode!r}")
    return mode


@torch.compiler.assume_constant_result
def use_cuda_kernel() -> bool:
    """Whether CUDA tensors go through the CUDA kernel (see the module docstring). In ``auto`` mode
    a kernel that cannot be had is said once, as a warning, and the PyTorch op is used."""
    mode = kernel_mode()
    if mode == "reference":
        return False
    if mode == "kernel":
        cuda_library()
        return True
    return _auto_kernel_available()


@functools.lru_cache(maxsize=None)
def _auto_kernel_available() -> bool:
    try:
        cuda_library()
    except RuntimeError as error:
        warnings.warn(f"NAF attention on CUDA runs the pure PyTorch op (slower, more memory): {error}", stacklevel=3)
        return False
    return True


@functools.lru_cache(maxsize=None)
def cuda_library() -> ctypes.CDLL:
    """libnaf_cuda: the built library when there is one, else compiled with nvcc for this GPU.
    Raises RuntimeError saying how to get one when neither works."""
    try:
        path = native.find_library("naf_cuda")
    except FileNotFoundError as missing:
        path = _compile_for_this_gpu(missing)
    return load_kernel_library(path)


def load_kernel_library(path: str | os.PathLike[str]) -> ctypes.CDLL:
    """A libnaf_cuda file, loaded and its entry point declared."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        raise RuntimeError(f"{path}: cannot be loaded ({error})") from None
    lib.naf_csna_forward_cuda.restype = ctypes.c_int
    lib.naf_csna_forward_cuda.argtypes = [
        ctypes.POINTER(native.AttentionShape), ctypes.c_int, *[ctypes.c_void_p] * 5, ctypes.c_float,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    return lib


def nvcc_path() -> str | None:
    """nvcc on PATH, else under $CUDA_HOME / $CUDA_PATH / /usr/local/cuda."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = pathlib.Path(cuda_home) / "bin" / "nvcc"
    return shutil.which("nvcc") or (str(candidate) if candidate.is_file() else None)


def _kernel_sources() -> tuple[pathlib.Path, pathlib.Path]:
    """(the .cu file, the include directory): an installed package's plugin_src (the TensorRT
    plugin's sources, which hold the kernel) or the repository checkout this module lives in."""
    package = pathlib.Path(__file__).resolve().parent
    for root in (package / "plugin_src", package.parent):
        source = root / "plugins" / "core" / "src" / "cross_scale_attention.cu"
        include = root / "plugins" / "core" / "include"
        if source.is_file() and (include / "naf" / "cross_scale_attention_cuda.h").is_file():
            return source, include
    raise RuntimeError("the CUDA kernel's source (plugins/core/src/cross_scale_attention.cu) is not part of this "
                       "installation; reinstall naf-export")


def _compile_for_this_gpu(missing: FileNotFoundError) -> pathlib.Path:
    if not torch.cuda.is_available():
        raise RuntimeError(f"no CUDA device; {missing}")
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError(
            f"{missing}; and no nvcc to compile it (install the CUDA toolkit, or build the CMake target "
            f"naf_cuda and set {native.LIB_DIR_ENV}); {MODE_ENV}=reference silences this"
        )
    major, minor = torch.cuda.get_device_capability()
    return build_kernel_library(f"{major}{minor}", nvcc)


def build_kernel_library(arch: str, nvcc: str, cache: pathlib.Path | None = None,
                         defines: tuple[str, ...] = ()) -> pathlib.Path:
    """Compiles libnaf_cuda for compute capability ``arch`` (e.g. "90") with ``nvcc`` (the CUDA
    runtime linked statically), once per source and flags: the cached file when it exists.
    ``defines``: preprocessor definitions such as "NAF_CSNA_PADDED_STAGING=1" (experimental
    kernel variants, compared by scripts/gpu_check.py)."""
    if not arch.isdigit():
        raise ValueError(f"arch: expected a compute capability such as '90', got {arch!r}")
    source, include = _kernel_sources()
    flags = ["-O3", "-std=c++17", "-shared", "-Xcompiler=-fPIC,-fvisibility=hidden", "-cudart=static",
             f"-gencode=arch=compute_{arch},code=sm_{arch}", f"-I{include}", *(f"-D{d}" for d in defines)]  # fmt: skip
    digest = hashlib.sha256(source.read_bytes() + (include / "naf" / "cross_scale_attention.h").read_bytes()
                            + (include / "naf" / "cross_scale_attention_cuda.h").read_bytes()
                            + " ".join(flags).encode()).hexdigest()[:16]  # fmt: skip
    if cache is None:
        cache = pathlib.Path(os.environ.get("NAF_EXPORT_CACHE_DIR") or pathlib.Path.home() / ".cache" / "naf-export")
    target = cache / "cuda" / f"sm_{arch}-{digest}" / "libnaf_cuda.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        built = pathlib.Path(work) / target.name
        result = subprocess.run([nvcc, *flags, "-o", str(built), str(source)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {source} with {nvcc} failed:\n{result.stderr[-4000:]}")
        os.replace(built, target)  # atomic: a concurrent process sees the whole library or none
    return target

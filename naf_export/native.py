"""Locating and calling the native libraries built from ``plugins/``.

``libnaf_core.so`` exposes the C ABI of ``plugins/core/include/naf/cross_scale_attention.h``,
``naf/group_norm_silu.h`` and ``naf/axial_rope.h``;
``libnaf_onnxruntime.so`` is the ONNX Runtime custom-op library and ``libnaf_openvino.so`` the
OpenVINO extension (with ``naf_openvino.json``, the OpenVINO version it was built against).
``pip install .`` puts them in ``naf_export/lib``; a developer build (``cmake -S . -B build && cmake --build build``) is found too.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import pathlib
import sys

import numpy as np

__all__ = [
    "ABI_VERSION",
    "LIB_DIR_ENV",
    "PLUGIN_ENTRY_POINTS",
    "AttentionShape",
    "aligned_empty",
    "axial_rope_cpu",
    "check_plugin",
    "cross_scale_attention_cpu",
    "elf_exported_symbols",
    "find_library",
    "group_norm_silu_cpu",
    "group_norm_silu_quantized_cpu",
    "openvino_build_info",
    "openvino_library_path",
    "ort_library_path",
]

ABI_VERSION = 1  # NAF_CSNA_ABI_VERSION this module was written for
LIB_DIR_ENV = "NAF_EXPORT_LIB_DIR"

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parent
_BUILD_HINT = (
    "build it with `pip install .` (installs into naf_export/lib), or "
    "`cmake -S <repo> -B <repo>/build && cmake --build <repo>/build`, "
    f"or point {LIB_DIR_ENV} at the folder that contains it"
)


def _file_name(name: str) -> str:
    if sys.platform == "win32":
        return f"{name}.dll"
    if sys.platform == "darwin":
        return f"lib{name}.dylib"
    return f"lib{name}.so"


def _candidates(file_name: str) -> list[pathlib.Path]:
    found: list[pathlib.Path] = []
    env_dir = os.environ.get(LIB_DIR_ENV)
    if env_dir:
        found.append(pathlib.Path(env_dir) / file_name)
    found.append(_PACKAGE_DIR / "lib" / file_name)
    try:
        dist_files = importlib.metadata.distribution("naf-export").files or []
    except importlib.metadata.PackageNotFoundError:
        dist_files = []
    for record in dist_files:
        if record.name == file_name:
            found.append(pathlib.Path(str(record.locate())))
    build_dir = _REPO_DIR / "build"
    if build_dir.is_dir():
        # Newest first, so a fresh developer build wins over stale ones.
        built = sorted(build_dir.rglob(file_name), key=lambda p: p.stat().st_mtime, reverse=True)
        found.extend(built)
    return found


def find_library(name: str) -> pathlib.Path:
    """Path of native library ``name`` ("naf_core", "naf_onnxruntime" or "naf_openvino").

    Search order: ``$NAF_EXPORT_LIB_DIR``, ``naf_export/lib``, the files installed with the
    ``naf-export`` distribution, then ``<repo>/build/**`` (developer builds). When
    ``$NAF_EXPORT_LIB_DIR`` is set it is authoritative: a library missing there is an error, so a
    test pointed at a special build (e.g. sanitizers) never silently uses another one.
    """
    file_name = _file_name(name)
    env_dir = os.environ.get(LIB_DIR_ENV)
    if env_dir:
        path = pathlib.Path(env_dir) / file_name
        if path.is_file():
            return path
        raise FileNotFoundError(f"{file_name} not found in {LIB_DIR_ENV}={env_dir}; {_BUILD_HINT}")
    for path in _candidates(file_name):
        if path.is_file():
            return path
    raise FileNotFoundError(f"native library {file_name} not found; {_BUILD_HINT}")


#: The entry point each runtime looks up in a plugin library: how a library's kind is told apart
#: before anything loads it (a wrong library's constructors never run).
PLUGIN_ENTRY_POINTS = {
    "onnxruntime": ("RegisterCustomOps", "libnaf_onnxruntime.so", "ONNX Runtime custom-op library"),
    "openvino": ("create_extensions", "libnaf_openvino.so", "OpenVINO extension library"),
    "tensorrt": ("getCreators", "libnaf_tensorrt.so", "TensorRT plugin library"),
}


def elf_exported_symbols(path: str | os.PathLike[str]) -> set[str] | None:
    """Names of the symbols an ELF shared library defines in its dynamic symbol table, read from
    the file without loading it; None when the file is not ELF (macOS, Windows). Raises
    ValueError for a truncated or malformed ELF file."""
    import struct

    data = pathlib.Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        return None
    try:
        is64, order = data[4] == 2, "<" if data[5] == 1 else ">"
        if is64:
            shoff, = struct.unpack_from(order + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(order + "HH", data, 0x3A)
            section = lambda i: struct.unpack_from(order + "IIQQQQIIQQ", data, shoff + i * shentsize)  # noqa: E731
            sym_format, sym_size = order + "IBBHQQ", 24
        else:
            shoff, = struct.unpack_from(order + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(order + "HH", data, 0x2E)
            section = lambda i: struct.unpack_from(order + "IIIIIIIIII", data, shoff + i * shentsize)  # noqa: E731
            sym_format, sym_size = order + "IIIBBH", 16
        names: set[str] = set()
        for i in range(shnum):
            header = section(i)
            if header[1] != 11:  # SHT_DYNSYM
                continue
            offset, size, link = header[4], header[5], header[6]
            strtab = section(link)[4]
            for pos in range(offset + sym_size, offset + size, sym_size):  # entry 0 is the null symbol
                fields = struct.unpack_from(sym_format, data, pos)
                name_off, shndx = fields[0], fields[3] if is64 else fields[5]
                if shndx == 0:  # SHN_UNDEF: imported, not defined here
                    continue
                end = data.index(b"\0", strtab + name_off)
                names.add(data[strtab + name_off:end].decode(errors="replace"))
        return names
    except (struct.error, ValueError, IndexError) as exc:
        raise ValueError(f"plugin: {os.fspath(path)!r} is not a readable shared library ({exc})") from exc


def check_plugin(path: str | os.PathLike[str], kind: str) -> pathlib.Path:
    """``path`` as an absolute path after checking that it is a ``kind`` plugin library
    ("onnxruntime", "openvino" or "tensorrt"). Absolute, because the dynamic loader searches
    LD_LIBRARY_PATH for a bare file name, and ``Path('./libx.so')`` prints as ``libx.so``. Raises
    FileNotFoundError / ValueError naming ``plugin`` and the expected library."""
    symbol, expected, label = PLUGIN_ENTRY_POINTS[kind]
    resolved = pathlib.Path(path).expanduser().absolute()
    if not resolved.is_file():
        raise FileNotFoundError(f"plugin: {os.fspath(path)!r} is not a file; expected the {label} {expected}")
    names = elf_exported_symbols(resolved)
    if names is not None and symbol not in names:
        found = next((entry for entry in PLUGIN_ENTRY_POINTS.values() if entry[0] in names), None)
        what = f"the {found[2]} {found[1]}" if found else "not a naf-export plugin library"
        raise ValueError(f"plugin: {os.fspath(path)!r} is {what} (it does not define {symbol}); "
                         f"this needs the {label} {expected}")
    return resolved


def ort_library_path() -> str:
    """Path to pass to ``onnxruntime.SessionOptions.register_custom_ops_library``."""
    return str(find_library("naf_onnxruntime"))


def openvino_library_path() -> str:
    """Path to pass to ``openvino.Core().add_extension`` (``libnaf_openvino.so``)."""
    return str(find_library("naf_openvino"))


def openvino_build_info(library: str | os.PathLike[str]) -> dict[str, str] | None:
    """The ``naf_openvino.json`` written next to ``library`` by the build (``openvino_version``:
    the OpenVINO release it was compiled against), or None when there is none."""
    import json

    path = pathlib.Path(library).with_name("naf_openvino.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _Shape(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_int64)
        for name in (
            "batch",
            "query_channels",
            "value_channels",
            "out_height",
            "out_width",
            "in_height",
            "in_width",
            "kernel_size",
            "num_heads",
        )
    ]


AttentionShape = _Shape  # NafCsnaShape, for the CUDA entry point (naf_export.cuda_attention)

_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}


@functools.lru_cache(maxsize=None)
def _core(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.naf_csna_abi_version.restype = ctypes.c_int
    lib.naf_csna_abi_version.argtypes = []
    version = lib.naf_csna_abi_version()
    if version != ABI_VERSION:
        raise RuntimeError(f"{path} has ABI version {version}, this naf_export expects {ABI_VERSION}; rebuild it")
    lib.naf_csna_forward_cpu.restype = ctypes.c_int
    lib.naf_csna_forward_cpu.argtypes = [
        ctypes.POINTER(_Shape),
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_float,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.naf_gn_silu_check_shape.restype = ctypes.c_int
    lib.naf_gn_silu_check_shape.argtypes = [ctypes.POINTER(_GnShape), ctypes.c_char_p, ctypes.c_size_t]
    lib.naf_rope_check_shape.restype = ctypes.c_int
    lib.naf_rope_check_shape.argtypes = [ctypes.POINTER(_RopeShape), ctypes.c_char_p, ctypes.c_size_t]
    lib.naf_rope_forward_cpu.restype = ctypes.c_int
    lib.naf_rope_forward_cpu.argtypes = [
        ctypes.POINTER(_RopeShape), ctypes.c_int, *[ctypes.c_void_p] * 6, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
    ]
    lib.naf_qgn_silu_forward_cpu.restype = ctypes.c_int
    lib.naf_qgn_silu_forward_cpu.argtypes = [
        ctypes.POINTER(_GnShape), ctypes.c_int, ctypes.c_void_p, _Quantization, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_float, _Quantization, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_char_p, ctypes.c_size_t,
    ]
    lib.naf_gn_silu_forward_cpu.restype = ctypes.c_int
    lib.naf_gn_silu_forward_cpu.argtypes = [
        ctypes.POINTER(_GnShape), ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
    ]
    return lib


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type = np.float32, alignment: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``alignment``-byte boundary, as
    runtime allocators give (numpy's own are only 16-byte aligned); the kernels stream whole-vector
    output rows into such buffers."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + alignment, dtype=np.uint8)
    offset = -raw.ctypes.data % alignment
    return raw[offset:offset + count * dtype.itemsize].view(dtype).reshape(shape)


def _as_array(x: object) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(x)


def cross_scale_attention_cpu(
    query: object,
    key: object,
    value: object,
    row_index: object,
    col_index: object,
    num_heads: int,
    scale: float,
    num_threads: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Run the native CPU kernel (DESIGN.md section 2) through ``libnaf_core``.

    ``query`` (B, Dq, H, W), ``key`` (B, Dq, h, w), ``value`` (B, C, h, w): one dtype, float32 or
    float16 (numpy arrays or CPU torch tensors). ``row_index`` (H, K), ``col_index`` (W, K): int32.
    Returns a (B, C, H, W) array of the value dtype: ``out`` when given (a C-contiguous array of
    that shape and dtype, reused to avoid page-faulting a fresh buffer on every call), else a new
    one. Raises ValueError with the kernel's message when an argument is malformed.
    """
    q, k, v = (_as_array(t) for t in (query, key, value))
    rows, cols = _as_array(row_index), _as_array(col_index)
    if q.dtype not in _DTYPES:
        raise ValueError(f"query: dtype {q.dtype} is not supported (float32 or float16)")
    for name, t in (("key", k), ("value", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name}: dtype {t.dtype} differs from the query dtype {q.dtype}")
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.ndim != 4:
            raise ValueError(f"{name}: expected a 4-D (B, channels, height, width) tensor, got shape {t.shape}")
    for name, t in (("row_index", rows), ("col_index", cols)):
        if t.dtype != np.int32:
            raise ValueError(f"{name}: expected int32, got {t.dtype}")
        if t.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D (size, kernel_size) table, got shape {t.shape}")
    if rows.shape[1] != cols.shape[1]:
        raise ValueError(f"col_index: kernel size {cols.shape[1]} differs from row_index's {rows.shape[1]}")
    b, dq_all, out_h, out_w = q.shape
    if k.shape[:2] != (b, dq_all):
        raise ValueError(f"key: shape {k.shape} must be (B={b}, Dq={dq_all}, h, w) to match the query")
    if v.shape[0] != b or v.shape[2:] != k.shape[2:]:
        raise ValueError(f"value: shape {v.shape} must be (B={b}, C, h={k.shape[2]}, w={k.shape[3]})")
    if rows.shape[0] != out_h:
        raise ValueError(f"row_index: has {rows.shape[0]} rows, expected H={out_h}")
    if cols.shape[0] != out_w:
        raise ValueError(f"col_index: has {cols.shape[0]} rows, expected W={out_w}")

    q, k, v, rows, cols = (np.ascontiguousarray(t) for t in (q, k, v, rows, cols))
    shape = _Shape(b, dq_all, v.shape[1], out_h, out_w, k.shape[2], k.shape[3], rows.shape[1], int(num_heads))
    out_shape = (b, v.shape[1], out_h, out_w)
    if out is None:
        out = aligned_empty(out_shape, q.dtype)
    elif out.shape != out_shape or out.dtype != q.dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out: expected a writeable C-contiguous {q.dtype} array of shape {out_shape}")
    message = ctypes.create_string_buffer(512)
    lib = _core(str(find_library("naf_core")))
    rc = lib.naf_csna_forward_cpu(
        ctypes.byref(shape),
        _DTYPES[q.dtype],
        q.ctypes.data,
        k.ctypes.data,
        v.ctypes.data,
        rows.ctypes.data,
        cols.ctypes.data,
        float(scale),
        out.ctypes.data,
        int(num_threads),
        message,
        len(message),
    )
    if rc != 0:
        raise ValueError(message.value.decode(errors="replace"))
    return out


class _GnShape(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("batch", "channels", "height", "width", "num_groups", "pad")]


def group_norm_silu_cpu(x: object, gamma: object, beta: object, num_groups: int, epsilon: float = 1e-5,
                        pad: int = 0) -> np.ndarray:
    """The fused GroupNorm -> SiLU -> reflect pad kernel of ``libnaf_core`` (naf/group_norm_silu.h),
    on the calling thread. ``x`` (N, C, H, W), ``gamma`` and ``beta`` (C,), one dtype (float32 or
    float16). Returns (N, C, H + 2 pad, W + 2 pad). The kernel checks sizes, groups and padding
    and raises ValueError with its message."""
    x, gamma, beta = (np.ascontiguousarray(_as_array(t)) for t in (x, gamma, beta))
    if x.dtype not in _DTYPES:
        raise ValueError(f"x: dtype {x.dtype} is not supported (float32 or float16)")
    if x.ndim != 4:
        raise ValueError(f"x: expected a 4-D (N, C, H, W) array, got shape {x.shape}")
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.dtype != x.dtype or t.shape != (x.shape[1],):
            raise ValueError(f"{name}: expected a ({x.shape[1]},) {x.dtype} array, got {t.shape} {t.dtype}")
    n, c, h, w = x.shape
    shape = _GnShape(n, c, h, w, int(num_groups), int(pad))
    message = ctypes.create_string_buffer(512)
    lib = _core(str(find_library("naf_core")))
    if lib.naf_gn_silu_check_shape(ctypes.byref(shape), message, len(message)) != 0:  # before allocating
        raise ValueError(message.value.decode(errors="replace"))
    out = np.empty((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    rc = lib.naf_gn_silu_forward_cpu(ctypes.byref(shape), _DTYPES[x.dtype], x.ctypes.data, gamma.ctypes.data,
                                     beta.ctypes.data, float(epsilon), out.ctypes.data, None, None, 1, message,
                                     len(message))
    if rc != 0:
        raise ValueError(message.value.decode(errors="replace"))
    return out


class _Quantization(ctypes.Structure):
    _fields_ = [("scale", ctypes.c_float), ("zero_point", ctypes.c_int32)]


_QTYPES = {np.dtype(np.int8): 0, np.dtype(np.uint8): 1}


def group_norm_silu_quantized_cpu(x: object, x_scale: float, x_zero_point: int, gamma: object, beta: object,
                                  num_groups: int, y_scale: float, y_zero_point: int, epsilon: float = 1e-5,
                                  pad: int = 0) -> np.ndarray:
    """The 8-bit GroupNorm -> SiLU -> reflect pad kernel of ``libnaf_core``
    (``naf_qgn_silu_forward_cpu``), on the calling thread: ``x`` (N, C, H, W) int8 or uint8 with
    its per-tensor scale and zero point, ``gamma``/``beta`` (C,) float32; returns
    (N, C, H + 2 pad, W + 2 pad) of x's type quantized with ``y_scale``/``y_zero_point``.
    Raises ValueError with the kernel's message on bad arguments."""
    x = np.ascontiguousarray(_as_array(x))
    gamma, beta = (np.ascontiguousarray(_as_array(t), dtype=np.float32) for t in (gamma, beta))
    if x.dtype not in _QTYPES:
        raise ValueError(f"x: dtype {x.dtype} is not supported (int8 or uint8)")
    if x.ndim != 4:
        raise ValueError(f"x: expected a 4-D (N, C, H, W) array, got shape {x.shape}")
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.shape != (x.shape[1],):
            raise ValueError(f"{name}: expected a ({x.shape[1]},) array, got {t.shape}")
    n, c, h, w = x.shape
    shape = _GnShape(n, c, h, w, int(num_groups), int(pad))
    message = ctypes.create_string_buffer(512)
    lib = _core(str(find_library("naf_core")))
    if lib.naf_gn_silu_check_shape(ctypes.byref(shape), message, len(message)) != 0:
        raise ValueError(message.value.decode(errors="replace"))
    out = np.empty((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    rc = lib.naf_qgn_silu_forward_cpu(ctypes.byref(shape), _QTYPES[x.dtype], x.ctypes.data,
                                      _Quantization(x_scale, x_zero_point), gamma.ctypes.data, beta.ctypes.data,
                                      float(epsilon), _Quantization(y_scale, y_zero_point), out.ctypes.data, None, None,
                                      1, message, len(message))
    if rc != 0:
        raise ValueError(message.value.decode(errors="replace"))
    return out


class _RopeShape(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("batch", "channels", "height", "width", "num_heads")]


def axial_rope_cpu(x: object, cos_h: object, sin_h: object, cos_w: object, sin_w: object, num_heads: int) -> np.ndarray:
    """The axial RoPE kernel of ``libnaf_core`` (naf/axial_rope.h), on the calling thread. ``x``
    (B, D, H, W); ``cos_h``/``sin_h`` (D / num_heads / 4, H) and ``cos_w``/``sin_w`` (same, W);
    one dtype, float32 or float16. Raises ValueError with the kernel's message on bad shapes."""
    x, *tables = (np.ascontiguousarray(_as_array(t)) for t in (x, cos_h, sin_h, cos_w, sin_w))
    if x.dtype not in _DTYPES:
        raise ValueError(f"x: dtype {x.dtype} is not supported (float32 or float16)")
    if x.ndim != 4:
        raise ValueError(f"x: expected a 4-D (B, D, H, W) array, got shape {x.shape}")
    b, d, h, w = x.shape
    shape = _RopeShape(b, d, h, w, int(num_heads))
    message = ctypes.create_string_buffer(512)
    lib = _core(str(find_library("naf_core")))
    if lib.naf_rope_check_shape(ctypes.byref(shape), message, len(message)) != 0:
        raise ValueError(message.value.decode(errors="replace"))
    quarter = d // num_heads // 4
    for name, t, size in zip(("cos_h", "sin_h", "cos_w", "sin_w"), tables, (h, h, w, w)):
        if t.dtype != x.dtype or t.shape != (quarter, size):
            raise ValueError(f"{name}: expected a ({quarter}, {size}) {x.dtype} array, got {t.shape} {t.dtype}")
    out = np.empty_like(x)
    rc = lib.naf_rope_forward_cpu(ctypes.byref(shape), _DTYPES[x.dtype], x.ctypes.data,
                                  *(t.ctypes.data for t in tables), out.ctypes.data, None, None, 1, message,
                                  len(message))
    if rc != 0:
        raise ValueError(message.value.decode(errors="replace"))
    return out

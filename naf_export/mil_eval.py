"""Evaluate a Core ML ML Program with numpy, op by op, from the saved package.

Core ML predicts only on macOS, and coremltools ships no interpreter. To check an ``.mlpackage``
elsewhere, coremltools reads it back into a MIL program (``milproto.load``: the same ops, constants
and weights the Core ML runtime would compile) and this module evaluates its ops in order, each
with its own numpy implementation. It is not the Core ML runtime: it checks what the package
computes (graph, attributes, weights, precision casts), not how a device computes it.

Numerics: every op reads its float inputs as float32, computes in float32 (reductions and matrix
products accumulate in float32) and rounds its result to the dtype the program declares for it,
so a float16 op rounds each result to float16. A device that also accumulates in float16 (possible
on the GPU and the Neural Engine) can be less accurate than this.

Only the ops listed in :data:`OPS` are implemented, each with the attribute values it checks; any
other op or attribute value raises :class:`UnsupportedOp` before anything runs (never a silent
pass-through), and a result whose shape differs from the program's declared one raises
:class:`naf_export.errors.ArtifactError`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import ArtifactError

__all__ = ["OPS", "MilEvaluator", "UnsupportedOp", "load_program"]


class UnsupportedOp(ArtifactError):
    """The program holds an op (or an attribute value) this evaluator does not implement."""


OpFn = Callable[..., np.ndarray]
#: MIL op type -> implementation, called with the op's inputs by name (arrays, or Python values for
#: scalars and strings; a tuple of arrays for a variadic input such as concat's ``values``).
OPS: dict[str, OpFn] = {}


def _op(name: str) -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        OPS[name] = fn
        return fn

    return register


def _float(x: np.ndarray) -> np.ndarray:
    """Float data as float32 (float16 inputs are computed on in float32)."""
    x = np.asarray(x)
    return x.astype(np.float32, copy=False) if np.issubdtype(x.dtype, np.floating) else x


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise UnsupportedOp(f"the MIL evaluator does not implement {what}")


def _flags(value, rank: int, default: bool) -> list[bool]:
    return [default] * rank if value is None else [bool(v) for v in np.asarray(value).reshape(-1)]


# --- elementwise -----------------------------------------------------------------------------------


@_op("add")
def _add(x, y):
    return _float(x) + _float(y)


@_op("sub")
def _sub(x, y):
    return _float(x) - _float(y)


@_op("mul")
def _mul(x, y):
    return _float(x) * _float(y)


@_op("real_div")
def _real_div(x, y):
    return _float(x) / _float(y)


@_op("sqrt")
def _sqrt(x):
    return np.sqrt(_float(x))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x << 0: sigmoid 0, as it should
        return 1.0 / (1.0 + np.exp(-x))


@_op("silu")
def _silu(x):
    x = _float(x)
    return x * _sigmoid(x)


@_op("softmax")
def _softmax(x, axis):
    x = _float(x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@_op("cast")
def _cast(x, dtype):
    _require(dtype in ("fp16", "fp32", "int32", "int16", "uint16", "int8", "uint8", "bool"), f"cast to {dtype!r}")
    return np.asarray(x)  # rounded to the declared output dtype by the evaluator


# --- reductions, products ----------------------------------------------------------------------------


@_op("reduce_mean")
def _reduce_mean(x, axes=None, keep_dims=False):
    axes = None if axes is None else tuple(int(a) for a in np.asarray(axes).reshape(-1))
    return np.mean(_float(x), axis=axes, keepdims=bool(keep_dims), dtype=np.float32)


@_op("matmul")
def _matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = _float(x), _float(y)
    _require(x.ndim >= 2 and y.ndim >= 2, "matmul of rank-1 operands")
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


# --- layout ------------------------------------------------------------------------------------------


@_op("reshape")
def _reshape(x, shape):
    shape = [int(s) for s in np.asarray(shape).reshape(-1)]
    _require(0 not in shape, "reshape with a 0 (copy-dimension) entry")
    return np.reshape(x, shape)


@_op("transpose")
def _transpose(x, perm):
    return np.transpose(x, [int(p) for p in np.asarray(perm).reshape(-1)])


@_op("concat")
def _concat(values, axis, interleave=False):
    _require(not interleave, "concat with interleave=True")
    return np.concatenate([np.asarray(v) for v in values], axis=int(axis))


@_op("slice_by_index")
def _slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    x = np.asarray(x)
    rank = x.ndim
    begin, end = np.asarray(begin).reshape(-1), np.asarray(end).reshape(-1)
    stride = [1] * rank if stride is None else [int(s) for s in np.asarray(stride).reshape(-1)]
    begin_mask, end_mask = _flags(begin_mask, rank, False), _flags(end_mask, rank, False)
    squeeze = _flags(squeeze_mask, rank, False)
    index: list[slice | int] = []
    for axis in range(rank):
        if squeeze[axis]:
            index.append(int(begin[axis]))
            continue
        start = None if begin_mask[axis] else int(begin[axis])
        stop = None if end_mask[axis] else int(end[axis])
        index.append(slice(start, stop, stride[axis]))
    return x[tuple(index)]


@_op("gather")
def _gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    _require(int(batch_dims) == 0, "gather with batch_dims != 0")
    indices = np.asarray(indices).astype(np.int64)
    size = np.shape(x)[int(axis)]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise ArtifactError(f"gather: indices in [{indices.min()}, {indices.max()}] out of range for an axis of {size}")
    return np.take(x, indices, axis=int(axis))


@_op("pad")
def _pad(x, pad, mode="constant", constant_val=0.0):
    x = np.asarray(x)
    pad = [int(p) for p in np.asarray(pad).reshape(-1)]
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
    _require(mode in modes and len(pad) % 2 == 0 and len(pad) // 2 <= x.ndim, f"pad mode {mode!r} with pad {pad}")
    widths = [(0, 0)] * (x.ndim - len(pad) // 2) + [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=constant_val)
    return np.pad(x, widths, mode=modes[mode])


# --- convolution and pooling -------------------------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def _spatial_padding(pad_type: str, pad, sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    if pad_type == "valid":
        return [(0, 0), (0, 0)]
    if pad_type == "custom":
        p = [int(v) for v in np.asarray(pad).reshape(-1)]
        return [(p[0], p[1]), (p[2], p[3])]
    _require(pad_type in ("same", "same_lower"), f"pad_type {pad_type!r}")
    lower = pad_type == "same_lower"
    return [_same_padding(s, k, st, d, lower) for s, k, st, d in zip(sizes, kernel, strides, dilations)]


@_op("conv")
def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    """2-D convolution as one matrix product per kernel tap (memory: one shifted input at a time)."""
    x, weight = _float(x), _float(weight)
    _require(x.ndim == 4 and weight.ndim == 4, f"conv of rank {x.ndim} (2-D convolutions only)")
    strides = [1, 1] if strides is None else [int(s) for s in np.asarray(strides).reshape(-1)]
    dilations = [1, 1] if dilations is None else [int(d) for d in np.asarray(dilations).reshape(-1)]
    b, cin, _, _ = x.shape
    cout, cin_g, kh, kw = weight.shape
    groups = int(groups)
    if cin_g * groups != cin or cout % groups:
        raise ArtifactError(f"conv: weight {weight.shape} does not fit input {x.shape} with groups={groups}")
    widths = _spatial_padding(pad_type, pad, x.shape[2:], (kh, kw), strides, dilations)
    x = np.pad(x, [(0, 0), (0, 0), *widths])
    (sh, sw), (dh, dw) = strides, dilations
    oh = (x.shape[2] - (kh - 1) * dh - 1) // sh + 1
    ow = (x.shape[3] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((b, cout, oh * ow), dtype=np.float32)
    cout_g = cout // groups
    for g in range(groups):
        xg, wg = x[:, g * cin_g:(g + 1) * cin_g], weight[g * cout_g:(g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                window = xg[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
                out[:, g * cout_g:(g + 1) * cout_g] += np.matmul(wg[:, :, i, j], window.reshape(b, cin_g, oh * ow))
    if bias is not None:
        out += _float(bias).reshape(1, cout, 1)
    return out.reshape(b, cout, oh, ow)


@_op("avg_pool")
def _avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False,
              ceil_mode=False):
    x = _float(x)
    kernel = [int(k) for k in np.asarray(kernel_sizes).reshape(-1)]
    strides = kernel if strides is None else [int(s) for s in np.asarray(strides).reshape(-1)]
    _require(x.ndim == 4 and len(kernel) == 2, "avg_pool other than 2-D")
    _require(pad_type == "valid" and not ceil_mode, f"avg_pool with pad_type {pad_type!r}, ceil_mode {ceil_mode}")
    (kh, kw), (sh, sw) = kernel, strides
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = np.zeros((*x.shape[:2], oh, ow), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            out += x[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
    return out / np.float32(kh * kw)


# --- constants ---------------------------------------------------------------------------------------


@_op("constexpr_affine_dequantize")
def _affine_dequantize(quantized_data, zero_point, scale, axis):
    """(data - zero_point) * scale, per channel along ``axis`` (iOS 16/17 weight compression)."""
    data = np.asarray(quantized_data).astype(np.float32)
    axis = int(axis) % data.ndim
    shape = [1] * data.ndim
    shape[axis] = -1

    def along_axis(v) -> np.ndarray:
        v = np.asarray(v, dtype=np.float32)
        return v if v.ndim == 0 else v.reshape(shape)

    return (data - along_axis(zero_point)) * along_axis(scale)


# --- the program -------------------------------------------------------------------------------------


def _nptype(var) -> np.dtype | None:
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    if types.is_str(dtype):
        return None
    return np.dtype(types.nptype_from_builtin(dtype))


class MilEvaluator:
    """A MIL function (default ``main``) of a ``coremltools`` Program, evaluable on numpy inputs.

    ``inputs`` maps each input name to its (shape, numpy dtype); ``outputs`` lists the output
    names. ``evaluator(**arrays)`` returns a dict of output arrays in their declared dtypes.
    Construction checks every op against :data:`OPS` (:class:`UnsupportedOp` otherwise).
    """

    def __init__(self, program, function: str = "main") -> None:
        if function not in program.functions:
            raise ArtifactError(f"model: the MIL program has no function {function!r} "
                                f"(has {sorted(program.functions)})")
        self.function = program.functions[function]
        self.operations = list(self.function.operations)
        for op in self.operations:
            if op.op_type != "const" and op.op_type not in OPS:
                raise UnsupportedOp(f"the MIL evaluator has no implementation of op {op.op_type!r} ({op.name}); "
                                    f"it evaluates {', '.join(sorted(['const', *OPS]))}")
            if op.blocks:
                raise UnsupportedOp(f"the MIL evaluator does not run control flow ({op.op_type} {op.name})")
            if op.op_type != "const":
                known = inspect.signature(OPS[op.op_type]).parameters
                unknown = sorted(set(op.inputs) - set(known))
                if unknown:
                    raise UnsupportedOp(f"the MIL evaluator's {op.op_type} does not implement the input(s) "
                                        f"{', '.join(unknown)} ({op.name})")
        self.inputs = {name: (tuple(var.shape), _nptype(var)) for name, var in self.function.inputs.items()}
        self._dtypes = {var.name: _nptype(var) for op in self.operations for var in op.outputs}
        self.outputs = [var.name for var in self.function.outputs]
        # Free every intermediate after its last reader: full-resolution maps are large.
        self._last_use: dict[str, int] = {}
        for index, op in enumerate(self.operations):
            for var in self._input_vars(op):
                self._last_use[var.name] = index
        self.op_types = sorted({op.op_type for op in self.operations})

    @staticmethod
    def _input_vars(op):
        for value in op.inputs.values():
            yield from (value if isinstance(value, (list, tuple)) else (value,))

    def _read(self, env: dict[str, np.ndarray], var):
        if var.name in env:
            return env[var.name]
        if var.val is not None:  # a literal bound directly (not through a const op)
            return var.val
        raise ArtifactError(f"model: {var.name!r} is read before any op writes it")

    def __call__(self, **arrays: np.ndarray) -> dict[str, np.ndarray]:
        missing = sorted(set(self.inputs) - set(arrays))
        if missing or set(arrays) - set(self.inputs):
            raise ValueError(f"inputs: expected {sorted(self.inputs)}, got {sorted(arrays)}")
        env: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in self.inputs.items():
            array = np.asarray(arrays[name])
            if array.shape != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
            env[name] = array.astype(dtype, copy=False)
        keep = set(self.outputs)
        for index, op in enumerate(self.operations):
            if op.op_type == "const":
                env[op.outputs[0].name] = op.outputs[0].val
                continue
            args = {}
            for param, value in op.inputs.items():
                if isinstance(value, (list, tuple)):
                    args[param] = tuple(self._read(env, v) for v in value)
                else:
                    args[param] = self._read(env, value)
            results = OPS[op.op_type](**args)
            results = results if isinstance(results, tuple) else (results,)
            for var, result in zip(op.outputs, results):
                env[var.name] = self._store(op, var, result, self._dtypes[var.name])
            for var in self._input_vars(op):
                if self._last_use.get(var.name) == index and var.name not in keep:
                    env.pop(var.name, None)
        return {name: env[name] for name in self.outputs}

    @staticmethod
    def _store(op, var, result, dtype: np.dtype | None) -> np.ndarray:
        result = np.asarray(result)
        if dtype is not None:
            result = result.astype(dtype, copy=False)
        declared = var.shape
        if all(isinstance(d, (int, np.integer)) for d in declared) and result.shape != tuple(declared):
            raise ArtifactError(f"model: op {op.op_type} ({op.name}) gives shape {result.shape}, "
                                f"the program declares {tuple(declared)}")
        return result


def load_program(path: str | os.PathLike[str]):
    """The MIL program of the ML Program package at ``path``, read back with coremltools (weights
    included). Raises ArtifactError for a package coremltools cannot read or a model that is not
    an ML Program."""
    from .runners.coreml import import_coremltools

    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load

    path = Path(path)
    try:
        mlmodel = ct.models.MLModel(os.fspath(path), skip_model_load=True)
        spec = mlmodel.get_spec()
    except Exception as exc:  # noqa: BLE001 - coremltools raises assorted errors for broken packages
        raise ArtifactError(f"model: coremltools cannot read {os.fspath(path)!r}: {exc}") from exc
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"model: {os.fspath(path)!r} is a Core ML {spec.WhichOneof('Type')} model; the MIL "
                            "evaluator reads ML Programs (.mlpackage) only")
    try:
        return load(spec, spec.specificationVersion, mlmodel.weights_dir)
    except Exception as exc:  # noqa: BLE001
        raise ArtifactError(f"model: coremltools cannot read the ML Program in {os.fspath(path)!r}: {exc}") from exc

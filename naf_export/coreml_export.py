"""Build NAF as a Core ML ML Program (iOS 17 / macOS 14) with coremltools' MIL builder.

No tracing: the program is written op by op from the model's weights and the exporter's own
tables, for fixed sizes and batch 1, with every tensor of rank <= 5 (Core ML's limit):

* image encoder: bilinear resizing as exact matrices (``linear_resize_matrix``), ``pad`` (reflect)
  + ``conv``, GroupNorm from ``reduce_mean``, SiLU, then ``avg_pool`` (divisible) or exact pooling
  matrices (adaptive average pooling with uneven windows) to the output size;
* RoPE from the per-row and per-column cos/sin tables (``rope_tables``), broadcast, never
  materialised at full resolution;
* attention from the index tables (``neighborhood_index``): for divisible ratios one
  constant-index ``gather`` of every low-resolution cell's K x K window and two batched
  ``matmul`` per cell, otherwise the row-gather form with one-hot column selection (both as
  ``naf_export.onnx_export`` writes them for ONNX), ``softmax`` in between.

Inputs ``image`` (1, 3, Hi, Wi) and ``features`` (1, C, h, w) and output ``upsampled`` (1, C, H, W)
are float32 whatever the compute precision. With float16 compute, the ops named in
``fp32_scopes`` (GroupNorm statistics, the attention softmax) can stay float32 (by default none
do); ``int8`` is float16 compute with 8-bit linear (symmetric, per output channel) convolution
weights.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .attention import neighborhood_index
from .contract import INPUT_NAMES, OUTPUT_NAME
from .model import NAF, _size_pair
from .onnx_export import ScopedNames, linear_resize_matrix, rope_tables
from .runners.coreml import import_coremltools

__all__ = ["FP32_SCOPES", "PRECISIONS", "CoreMLExport", "build_program", "convert_program", "discard", "export_coreml",
           "package_size"]

PRECISIONS = ("fp32", "fp16", "int8")
#: Op-name scopes that may stay float32 under float16 compute (``fp32_scopes``): the GroupNorm
#: statistics (mean, variance, normalisation) and the attention softmax. By default nothing does
#: (``naf_export.targets.coreml.FP16_FP32_SCOPES`` says why; figures in docs/BENCHMARKS.md).
FP32_SCOPES = ("group_norm", "softmax")


def _f32(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)


def _i32(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.int32)


class _ProgramWriter:
    """The ops of one NAF forward, written with ``mb`` (coremltools' MIL builder)."""

    def __init__(self, mb, model: NAF) -> None:
        self.mb = mb
        self.model = model
        self.name = ScopedNames()

    # --- image encoder -------------------------------------------------------------------------

    def resize(self, x, in_hw: tuple[int, int], out_hw: tuple[int, int], mode: str):
        """Exact separable bilinear resize / adaptive average pooling of a (1, C, H, W) tensor."""
        mb = self.mb
        if in_hw == out_hw:
            return x
        (ih, iw), (oh, ow) = in_hw, out_hw
        if mode == "pool" and ih % oh == 0 and iw % ow == 0:
            kernel = [ih // oh, iw // ow]  # the windows of PyTorch's adaptive pooling
            return mb.avg_pool(x=x, kernel_sizes=kernel, strides=kernel, pad_type="valid",
                               exclude_padding_from_average=True, name=self.name("avg_pool"))
        if iw != ow:
            x = mb.matmul(x=x, y=linear_resize_matrix(iw, ow, mode).T.copy(), name=self.name(f"{mode}_w"))
        if ih != oh:
            x = mb.matmul(x=linear_resize_matrix(ih, oh, mode), y=x, name=self.name(f"{mode}_h"))
        return x

    def conv(self, x, conv: torch.nn.Conv2d):
        """``conv`` with the release's reflect padding."""
        mb = self.mb
        k = conv.kernel_size[0]
        if k > 1:
            p = k // 2
            x = mb.pad(x=x, pad=np.array([p, p, p, p], dtype=np.int32), mode="reflect", name=self.name("pad"))
        return mb.conv(x=x, weight=_f32(conv.weight), bias=_f32(conv.bias), strides=[1, 1], pad_type="valid",
                       dilations=[1, 1], groups=1, name=self.name("conv"))

    def group_norm(self, x, norm: torch.nn.GroupNorm, hw: tuple[int, int]):
        mb = self.mb
        groups, channels = norm.num_groups, norm.num_channels
        with self.name.scope("group_norm"):
            y = mb.reshape(x=x, shape=[1, groups, channels // groups, *hw], name=self.name("reshape"))
            mean = mb.reduce_mean(x=y, axes=[2, 3, 4], keep_dims=True, name=self.name("mean"))
            centred = mb.sub(x=y, y=mean, name=self.name("centre"))
            var = mb.reduce_mean(x=mb.mul(x=centred, y=centred, name=self.name("square")), axes=[2, 3, 4],
                                 keep_dims=True, name=self.name("variance"))
            std = mb.sqrt(x=mb.add(x=var, y=np.float32(norm.eps), name=self.name("add_eps")), name=self.name("std"))
            y = mb.real_div(x=centred, y=std, name=self.name("normalise"))
        y = mb.reshape(x=y, shape=[1, channels, *hw], name=self.name("reshape"))
        y = mb.mul(x=y, y=_f32(norm.weight).reshape(channels, 1, 1), name=self.name("gn_gamma"))
        return mb.add(x=y, y=_f32(norm.bias).reshape(channels, 1, 1), name=self.name("gn_beta"))

    def branch(self, x, branch: torch.nn.Sequential, hw: tuple[int, int]):
        x = self.conv(x, branch[0])
        for block in branch[1:]:
            for norm, conv in ((block.norm1, block.conv1), (block.norm2, block.conv2)):
                x = self.conv(self.mb.silu(x=self.group_norm(x, norm, hw), name=self.name("silu")), conv)
        return x

    def rope(self, x, hw: tuple[int, int]):
        """The model's rotation: per head, channels [0, D/2) against [D/2, D); within each half the
        first D/4 channels turn with the row angle, the others with the column angle. Viewed as
        (heads, 4, D/4, H, W) (first-row, first-col, second-row, second-col parts), each part
        multiplies a (D/4, H, 1) or (D/4, 1, W) table by broadcasting."""
        mb = self.mb
        rope = self.model.image_encoder.rope
        h, w = hw
        quarter = rope.head_dim // 4
        cos_h, sin_h, cos_w, sin_w = (_f32(t) for t in rope_tables(rope, hw))
        row_tables = (cos_h[:, :, None], sin_h[:, :, None])  # (D/4, H, 1)
        col_tables = (cos_w[:, None, :], sin_w[:, None, :])  # (D/4, 1, W)
        x = mb.reshape(x=x, shape=[rope.num_heads, 4, quarter, h, w], name=self.name("rope_view"))
        part = [mb.slice_by_index(x=x, begin=[0, i, 0, 0, 0], end=[rope.num_heads, i + 1, quarter, h, w],
                                  name=self.name("rope_part")) for i in range(4)]
        out = [None] * 4

        def mul(a, b):
            return mb.mul(x=a, y=b, name=self.name("rope_mul"))

        for first, second, (cos, sin) in ((0, 2, row_tables), (1, 3, col_tables)):
            out[first] = mb.sub(x=mul(part[first], cos), y=mul(part[second], sin), name=self.name("rope_first"))
            out[second] = mb.add(x=mul(part[second], cos), y=mul(part[first], sin), name=self.name("rope_second"))
        x = mb.concat(values=out, axis=1, name=self.name("rope_concat"))
        return mb.reshape(x=x, shape=[1, rope.num_heads * rope.head_dim, h, w], name=self.name("rope_out"))

    # --- attention -----------------------------------------------------------------------------

    def softmax(self, logits):
        mb = self.mb
        logits = mb.mul(x=logits, y=np.float32(self.model.scale), name=self.name("scale"))
        with self.name.scope("softmax"):
            return mb.softmax(x=logits, axis=-1, name=self.name("softmax"))

    def attention_cells(self, q, k, v, channels: int, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        """Divisible ratios: all queries of one low-resolution cell share one K x K window, gathered
        once per cell with a constant (cells, K*K) index into the flattened low-resolution map."""
        mb = self.mb
        (h, w), (out_h, out_w) = in_hw, out_hw
        heads, kk = self.model.num_heads, self.model.kernel_size
        dq, e = self.model.dim // heads, channels // heads
        dh, dw = out_h // h, out_w // w
        cells, per_cell = h * w, dh * dw
        rows = neighborhood_index(h, out_h, kk)[::dh]  # (h, K): each cell's window, from its first row
        cols = neighborhood_index(w, out_w, kk)[::dw]  # (w, K)
        flat = (rows[:, None, :, None] * w + cols[None, :, None, :]).reshape(cells, kk * kk)

        def windows(x, d: int):  # (1, n*d, h, w) -> (n, cells, K*K, d)
            x = mb.reshape(x=x, shape=[heads * d, cells], name=self.name("flat"))
            x = mb.gather(x=x, indices=_i32(flat), axis=1, name=self.name("windows"))  # n*d, cells, KK
            x = mb.reshape(x=x, shape=[heads, d, cells, kk * kk], name=self.name("reshape"))
            return mb.transpose(x=x, perm=[0, 2, 3, 1], name=self.name("transpose"))

        qc = mb.reshape(x=q, shape=[heads * dq, h, dh, w, dw], name=self.name("reshape"))
        qc = mb.transpose(x=qc, perm=[0, 1, 3, 2, 4], name=self.name("transpose"))  # n*dq h w dh dw
        qc = mb.reshape(x=qc, shape=[heads, dq, cells, per_cell], name=self.name("reshape"))
        qc = mb.transpose(x=qc, perm=[0, 2, 3, 1], name=self.name("transpose"))  # n cells P dq
        logits = mb.matmul(x=qc, y=windows(k, dq), transpose_y=True, name=self.name("logits"))  # n cells P KK
        out = mb.matmul(x=self.softmax(logits), y=windows(v, e), name=self.name("weighted"))  # n cells P e
        out = mb.transpose(x=out, perm=[0, 3, 1, 2], name=self.name("transpose"))  # n e cells P
        out = mb.reshape(x=out, shape=[heads * e, h, w, dh, dw], name=self.name("reshape"))
        out = mb.transpose(x=out, perm=[0, 1, 3, 2, 4], name=self.name("transpose"))  # n*e h dh w dw
        return mb.reshape(x=out, shape=[1, channels, out_h, out_w], name=OUTPUT_NAME)

    def attention_gather(self, q, k, v, channels: int, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        """Any ratio: each output row attends to K full low-resolution rows (gathered), and each
        output column's K-column window is selected with exact one-hot matrix products."""
        mb = self.mb
        (h, w), (out_h, out_w) = in_hw, out_hw
        heads, kk = self.model.num_heads, self.model.kernel_size
        dq, e = self.model.dim // heads, channels // heads
        rows = neighborhood_index(h, out_h, kk)  # (H, K)
        onehot = F.one_hot(neighborhood_index(w, out_w, kk), w).to(torch.float32)  # (W, K, w)
        select = _f32(onehot.permute(0, 2, 1))  # (W, w, K): picks each column's window
        spread = _f32(onehot)  # (W, K, w): puts the weights back on full rows (duplicates add)

        def key_rows(x, d: int):  # (1, n*d, h, w) -> (n, H, K*w, d)
            x = mb.reshape(x=x, shape=[heads, d, h, w], name=self.name("reshape"))
            x = mb.gather(x=x, indices=_i32(rows), axis=2, name=self.name("row_windows"))  # n d H K w
            x = mb.transpose(x=x, perm=[0, 2, 3, 4, 1], name=self.name("transpose"))  # n H K w d
            return mb.reshape(x=x, shape=[heads, out_h, kk * w, d], name=self.name("reshape"))

        qr = mb.reshape(x=q, shape=[heads, dq, out_h, out_w], name=self.name("reshape"))
        qr = mb.transpose(x=qr, perm=[0, 2, 3, 1], name=self.name("transpose"))  # n H W dq
        scores = mb.matmul(x=qr, y=key_rows(k, dq), transpose_y=True, name=self.name("scores"))  # n H W Kw
        scores = mb.reshape(x=scores, shape=[heads, out_h, out_w, kk, w], name=self.name("reshape"))
        logits = mb.matmul(x=scores, y=select, name=self.name("logits"))  # n H W K K
        logits = mb.reshape(x=logits, shape=[heads, out_h, out_w, kk * kk], name=self.name("reshape"))
        probs = mb.reshape(x=self.softmax(logits), shape=[heads, out_h, out_w, kk, kk], name=self.name("reshape"))
        dense = mb.matmul(x=probs, y=spread, name=self.name("dense"))  # n H W K w
        dense = mb.reshape(x=dense, shape=[heads, out_h, out_w, kk * w], name=self.name("reshape"))
        out = mb.matmul(x=dense, y=key_rows(v, e), name=self.name("weighted"))  # n H W e
        out = mb.transpose(x=out, perm=[0, 3, 1, 2], name=self.name("transpose"))  # n e H W
        return mb.reshape(x=out, shape=[1, channels, out_h, out_w], name=OUTPUT_NAME)

    # --- the whole forward ---------------------------------------------------------------------

    def forward(self, image, features, image_hw, in_hw, out_hw, channels: int):
        (ih, iw), (oh, ow) = image_hw, out_hw
        # The release's resize rule for the encoder input.
        enc_hw = (min(ih, 4 * oh, 4 * ow), min(iw, 4 * ow, 4 * oh)) if ih > 4 * oh or iw > 4 * ow else image_hw
        x = self.resize(image, image_hw, enc_hw, "bilinear")
        encoder = self.model.image_encoder
        x = self.mb.concat(values=[self.branch(x, b, enc_hw) for b in (encoder.encoder, encoder.sem_encoder)],
                           axis=1, name=self.name("concat"))
        queries = self.rope(self.resize(x, enc_hw, out_hw, "pool"), out_hw)
        keys = self.resize(queries, out_hw, in_hw, "pool")
        with self.name.scope("attention"):
            if oh % in_hw[0] == 0 and ow % in_hw[1] == 0:
                return self.attention_cells(queries, keys, features, channels, in_hw, out_hw)
            return self.attention_gather(queries, keys, features, channels, in_hw, out_hw)


def build_program(
    model: NAF,
    *,
    image_size: int | Sequence[int],
    feature_size: int | Sequence[int],
    channels: int,
    output_size: int | Sequence[int],
):
    """The float32 MIL program (``coremltools.converters.mil.Program``) of ``model`` for fixed
    sizes, batch 1, inputs ``image``/``features``, output ``upsampled``."""
    ct = import_coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    image_hw = _size_pair("image_size", image_size)
    in_hw = _size_pair("feature_size", feature_size)
    out_hw = _size_pair("output_size", output_size)
    model.check_inputs(torch.zeros(1, 3, *image_hw), torch.zeros(1, channels, *in_hw), out_hw)
    writer = _ProgramWriter(mb, model)
    specs = [mb.TensorSpec(shape=(1, 3, *image_hw), dtype=types.fp32),
             mb.TensorSpec(shape=(1, channels, *in_hw), dtype=types.fp32)]

    @mb.program(input_specs=specs, opset_version=ct.target.iOS17)
    def naf(image, features):
        return writer.forward(image, features, image_hw, in_hw, out_hw, channels)

    # mb.program names the inputs after the function's parameters.
    assert tuple(naf.functions["main"].inputs) == INPUT_NAMES
    return naf


def _fp16_selector(fp32_scopes: Sequence[str]):
    """op_selector for coremltools' FP16ComputePrecision: True = run this op in float16."""
    unknown = set(fp32_scopes) - set(FP32_SCOPES)
    if unknown:
        raise ValueError(f"fp32_scopes: expected names from {FP32_SCOPES}, got {sorted(unknown)}")
    prefixes = tuple(f"{scope}/" for scope in fp32_scopes)

    def to_fp16(op) -> bool:
        return not any(prefix in op.name for prefix in prefixes)

    return to_fp16


@contextlib.contextmanager
def _conversion():
    """coremltools drops the temporary folder it converts into without closing it (a
    ResourceWarning about its implicit clean-up, which is all it is)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ResourceWarning, message="Implicitly cleaning up")
        yield


def discard(mlmodel) -> None:
    """Remove the temporary package coremltools keeps a converted model in (until the process
    exits, otherwise): call once the model is saved or replaced."""
    if getattr(mlmodel, "is_temp_package", False) and mlmodel.package_path:
        shutil.rmtree(mlmodel.package_path, ignore_errors=True)


def convert_program(program, precision: str = "fp32", fp32_scopes: Sequence[str] = ()):
    """``program`` as an ``MLModel`` (ML Program, iOS 17 / macOS 14) at ``precision``: fp32; fp16
    compute (ops in ``fp32_scopes`` stay float32); int8 = fp16 compute + 8-bit linear symmetric
    per-channel convolution weights. Inputs and outputs are float32 in every case. The model lives
    in a temporary package: save it, then :func:`discard` it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    ct = import_coremltools()
    function = program.functions["main"]
    inputs = [ct.TensorType(name=name, shape=tuple(var.shape), dtype=np.float32)
              for name, var in function.inputs.items()]
    compute = (ct.precision.FLOAT32 if precision == "fp32"
               else ct.transform.FP16ComputePrecision(op_selector=_fp16_selector(fp32_scopes)))
    with _conversion():
        mlmodel = ct.convert(
            program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17, compute_precision=compute,
            inputs=inputs, outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)], skip_model_load=True,
        )
        if precision == "int8":
            from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

            # Convolutions only: the RoPE tables, pooling/resize and one-hot matrices stay float.
            config = OptimizationConfig(op_type_configs={"conv": OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0)})
            fp16_model, mlmodel = mlmodel, linear_quantize_weights(mlmodel, config=config)
            discard(fp16_model)
    mlmodel.short_description = "NAF feature upsampler (naf-export)"
    return mlmodel


@dataclass
class CoreMLExport:
    """What :func:`export_coreml` wrote: the package, its size on disk, and the conversion time
    (program build + conversion + save)."""

    path: Path
    size_bytes: int
    convert_seconds: float


def package_size(path: str | os.PathLike[str]) -> int:
    """Bytes of every file in a package (a directory) or of a file."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def export_coreml(
    model: NAF,
    path: str | os.PathLike[str],
    *,
    image_size: int | Sequence[int],
    feature_size: int | Sequence[int],
    channels: int,
    output_size: int | Sequence[int],
    precision: str = "fp32",
    fp32_scopes: Sequence[str] = (),
) -> CoreMLExport:
    """Write ``model`` as a Core ML ``.mlpackage`` at ``path`` (replaced if present) for fixed sizes
    and batch 1; see :func:`convert_program` for ``precision`` and ``fp32_scopes``."""
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"path: expected a folder name ending in .mlpackage, got {os.fspath(path)!r}")
    start = time.perf_counter()
    program = build_program(model, image_size=image_size, feature_size=feature_size, channels=channels,
                            output_size=output_size)
    mlmodel = convert_program(program, precision, fp32_scopes)
    try:
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        mlmodel.save(os.fspath(path))
    finally:
        discard(mlmodel)
    return CoreMLExport(path, package_size(path), time.perf_counter() - start)

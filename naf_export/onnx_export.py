"""Export NAF to ONNX.

The graph is written node by node from the model's weights (no tracing), for fixed spatial sizes:
resizing and non-divisible adaptive pooling become exact matrices taken from PyTorch itself, the
RoPE tables are built in the graph from per-row and per-column angles, and the attention step is
either

* ``fused``: one ``naf::CrossScaleNeighborhoodAttention`` node (the project's plugin), with the
  index tables as int32 initializers, or
* ``portable``: standard ONNX operators only — a batched matrix product over low-resolution
  cells when the ratio divides the output size, otherwise a gather formulation (row windows by
  ``Gather``, column windows by exact one-hot matrix products).

The image encoder's elementwise steps -- ``GroupNorm -> SiLU -> reflect Pad`` before each block
convolution, and the RoPE of the queries -- are standard operators (``encoder_ops="onnx"``),
or plugin nodes: ``encoder_ops="rope"`` writes the RoPE as one ``naf::AxialRoPE`` node (one read and
write instead of ~6; ONNX Runtime and OpenVINO plugins), ``encoder_ops="fused"`` also each
GroupNorm as one ``naf::GroupNormSiLU`` node (statistics in float64; two reads and one write of the
map where the standard form takes ~8 passes; ONNX Runtime plugin only).

Inputs are named ``image`` (B, 3, Hi, Wi) and ``features`` (B, C, h, w); the output ``upsampled``
(B, C, H, W).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from .attention import neighborhood_index
from .model import NAF, RotaryEmbedding2d, _size_pair

__all__ = ["ATTENTION_DOMAIN", "ATTENTION_OP", "ENCODER_OPS", "OPSET", "ScopedNames", "export_onnx", "linear_resize_matrix",
           "register_naf_schemas", "rope_tables"]

from .contract import (ATTENTION_DOMAIN, ATTENTION_OP, AXIAL_ROPE_OP, GROUP_NORM_SILU_OP, INPUT_NAMES, OPSET, OUTPUT_NAME,
                       QUANTIZED_GROUP_NORM_SILU_OP, STAGES_KEY)

#: Node-name scopes ("scope/op_n") of the parts quantization keeps in float by default.
GROUP_NORM_SCOPE = "group_norm"
ATTENTION_SCOPE = "attention"
#: ``encoder_ops`` values: standard operators, or the plugin's fused nodes.
ENCODER_OPS = ("onnx", "rope", "fused")


def register_naf_schemas() -> None:
    """Make onnx's checker and shape inference aware of the ``naf`` domain's operators."""
    P, A = onnx.defs.OpSchema.FormalParameter, onnx.defs.OpSchema.Attribute
    floats = [("T", ["tensor(float)", "tensor(float16)"], "storage type")]
    schemas = [
        onnx.defs.OpSchema(
            ATTENTION_OP, ATTENTION_DOMAIN, 1,
            doc="Cross-scale neighborhood attention (naf-export, DESIGN.md section 2).",
            inputs=[P("query", "T"), P("key", "T"), P("value", "T"), P("row_index", "tensor(int32)"),
                    P("col_index", "tensor(int32)")],
            outputs=[P("output", "T")], type_constraints=floats,
            attributes=[A("num_heads", onnx.defs.OpSchema.AttrType.INT, "heads"),
                        A("scale", onnx.defs.OpSchema.AttrType.FLOAT, "logit scale")],
        ),
        onnx.defs.OpSchema(
            GROUP_NORM_SILU_OP, ATTENTION_DOMAIN, 1,
            doc="GroupNorm, SiLU, then reflect padding of each spatial side (naf-export ONNX Runtime plugin).",
            inputs=[P("X", "T"), P("gamma", "T"), P("beta", "T")], outputs=[P("Y", "T")], type_constraints=floats,
            attributes=[A("num_groups", onnx.defs.OpSchema.AttrType.INT, "groups"),
                        A("epsilon", helper.make_attribute("epsilon", 1e-5), "variance epsilon"),
                        A("pad", helper.make_attribute("pad", 0), "reflect padding per spatial side")],
        ),
        onnx.defs.OpSchema(
            QUANTIZED_GROUP_NORM_SILU_OP, ATTENTION_DOMAIN, 1,
            doc="GroupNormSiLU between DequantizeLinear and QuantizeLinear, in 8 bits (naf-export ONNX Runtime plugin).",
            inputs=[P("X", "T8"), P("x_scale", "tensor(float)"), P("x_zero_point", "T8"), P("gamma", "tensor(float)"),
                    P("beta", "tensor(float)"), P("y_scale", "tensor(float)"), P("y_zero_point", "T8")],
            outputs=[P("Y", "T8")], type_constraints=[("T8", ["tensor(int8)", "tensor(uint8)"], "8-bit storage type")],
            attributes=[A("num_groups", onnx.defs.OpSchema.AttrType.INT, "groups"),
                        A("epsilon", helper.make_attribute("epsilon", 1e-5), "variance epsilon"),
                        A("pad", helper.make_attribute("pad", 0), "reflect padding per spatial side")],
        ),
        onnx.defs.OpSchema(
            AXIAL_ROPE_OP, ATTENTION_DOMAIN, 1,
            doc="Axial rotary position embedding of a (B, D, H, W) map (naf-export ONNX Runtime plugin).",
            inputs=[P("X", "T"), P("cos_h", "T"), P("sin_h", "T"), P("cos_w", "T"), P("sin_w", "T")],
            outputs=[P("Y", "T")], type_constraints=floats,
            attributes=[A("num_heads", onnx.defs.OpSchema.AttrType.INT, "heads")],
        ),
    ]
    for schema in schemas:
        try:
            onnx.defs.get_schema(schema.name, 1, ATTENTION_DOMAIN)
        except onnx.defs.SchemaError:
            onnx.defs.register_schema(schema)


def linear_resize_matrix(in_size: int, out_size: int, mode: str) -> np.ndarray:
    """(out_size, in_size) matrix M with resize(x) = M @ x along one axis, read from PyTorch:
    ``mode`` "bilinear" (align_corners=False) or "pool" (adaptive average pooling)."""
    eye = torch.eye(in_size, dtype=torch.float64).view(1, in_size, in_size, 1)
    if mode == "bilinear":
        out = F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)
    else:
        out = F.adaptive_avg_pool2d(eye, (out_size, 1))
    return out.view(in_size, out_size).t().numpy().astype(np.float32)


class ScopedNames:
    """Unique names ``scope/hint_n`` for the nodes of a graph being built: the scope lets later
    passes select nodes (INT8 quantization and float16 conversion keep scopes in float)."""

    def __init__(self) -> None:
        self._count = 0
        self._scopes: list[str] = []

    @contextlib.contextmanager
    def scope(self, name: str):
        """Prefix the names made inside with ``name/``."""
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    def __call__(self, hint: str) -> str:
        self._count += 1
        return "/".join([*self._scopes, f"{hint}_{self._count}"])


class _Graph:
    """Small helper that names nodes and initializers uniquely."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self.batch: int | str = 1  # the batch dimension of every activation
        self.name = ScopedNames()
        self.scope = self.name.scope

    def const(self, value: np.ndarray | torch.Tensor, hint: str = "const") -> str:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, domain: str = "", **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, domain=domain, **attrs))
        return out

    def naf_op(self, op_type: str, inputs: Sequence[str], hint: str, shape: Sequence[int | str], **attrs) -> str:
        """A node of the ``naf`` domain, with its float32 output's shape recorded in the graph's
        value_info: onnx's shape inference cannot derive it, and tools that need every tensor's
        type (ONNX Runtime's INT8 calibrator among them) would otherwise skip the tensor."""
        out = self.op(op_type, inputs, hint=hint, domain=ATTENTION_DOMAIN, **attrs)
        self.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, list(shape)))
        return out

    # Shorthands for the ops used repeatedly.
    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape)])

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", [x], perm=list(perm))

    def matmul(self, a: str, b: str) -> str:
        return self.op("MatMul", [a, b])


def _resize_axes(g: _Graph, x: str, in_hw: tuple[int, int], out_hw: tuple[int, int], mode: str) -> str:
    """Exact separable resize / adaptive average pooling of an NCHW tensor."""
    if in_hw == out_hw:
        return x
    (ih, iw), (oh, ow) = in_hw, out_hw
    if mode == "pool" and ih % oh == 0 and iw % ow == 0:
        kernel = [ih // oh, iw // ow]  # identical windows to PyTorch's adaptive pooling
        return g.op("AveragePool", [x], kernel_shape=kernel, strides=kernel)
    if iw != ow:
        x = g.matmul(x, g.const(linear_resize_matrix(iw, ow, mode).T.copy(), "resize_w"))
    if ih != oh:
        x = g.matmul(g.const(linear_resize_matrix(ih, oh, mode), "resize_h"), x)
    return x


def _conv(g: _Graph, x: str, conv: torch.nn.Conv2d, padded: bool = False) -> str:
    """``conv`` with the release's reflect padding, unless ``x`` is ``padded`` already."""
    k = conv.kernel_size[0]
    if k > 1 and not padded:
        p = k // 2
        x = g.op("Pad", [x, g.ints([0, 0, p, p, 0, 0, p, p])], mode="reflect")
    return g.op("Conv", [x, g.const(conv.weight, "conv_w"), g.const(conv.bias, "conv_b")], kernel_shape=[k, k])


def _mean_per_group(g: _Graph, y: str) -> str:
    # One axis at a time (W, then H, then the group's channels): runtimes such as ONNX Runtime
    # sum a reduction sequentially in float32, which over a whole group (up to millions of
    # values) costs ~1e-5 relative error; short reductions keep float32 parity with PyTorch.
    for axis in (4, 3, 2):
        y = g.op("ReduceMean", [y], axes=[axis], keepdims=1)
    return y


def _group_norm(g: _Graph, x: str, norm: torch.nn.GroupNorm, hw: tuple[int, int]) -> str:
    with g.scope(GROUP_NORM_SCOPE):
        return _group_norm_nodes(g, x, norm, hw)


def _group_norm_nodes(g: _Graph, x: str, norm: torch.nn.GroupNorm, hw: tuple[int, int]) -> str:
    groups, channels = norm.num_groups, norm.num_channels
    y = g.reshape(x, [0, groups, channels // groups, *hw])
    centred = g.op("Sub", [y, _mean_per_group(g, y)])
    var = _mean_per_group(g, g.op("Mul", [centred, centred]))
    std = g.op("Sqrt", [g.op("Add", [var, g.const(np.float32(norm.eps), "gn_eps")])])
    y = g.reshape(g.op("Div", [centred, std]), [0, channels, *hw])
    y = g.op("Mul", [y, g.const(norm.weight.view(channels, 1, 1), "gn_gamma")])
    return g.op("Add", [y, g.const(norm.bias.view(channels, 1, 1), "gn_beta")])


def _silu(g: _Graph, x: str) -> str:
    return g.op("Mul", [x, g.op("Sigmoid", [x])])


def _norm_silu_conv(g: _Graph, x: str, norm: torch.nn.GroupNorm, conv: torch.nn.Conv2d, hw: tuple[int, int],
                    encoder_ops: str) -> str:
    """conv(silu(norm(x))), the conv's reflect padding included."""
    if encoder_ops != "fused":
        return _conv(g, _silu(g, _group_norm(g, x, norm, hw)), conv)
    with g.scope(GROUP_NORM_SCOPE):
        pad = conv.kernel_size[0] // 2
        x = g.naf_op(GROUP_NORM_SILU_OP, [x, g.const(norm.weight, "gn_gamma"), g.const(norm.bias, "gn_beta")],
                     "group_norm_silu", [g.batch, norm.num_channels, hw[0] + 2 * pad, hw[1] + 2 * pad],
                     num_groups=norm.num_groups, epsilon=float(norm.eps), pad=pad)
    return _conv(g, x, conv, padded=True)


def _encoder_branch(g: _Graph, x: str, branch: torch.nn.Sequential, hw: tuple[int, int], encoder_ops: str) -> str:
    x = _conv(g, x, branch[0])
    for block in branch[1:]:
        x = _norm_silu_conv(g, x, block.norm1, block.conv1, hw, encoder_ops)
        x = _norm_silu_conv(g, x, block.norm2, block.conv2, hw, encoder_ops)
    return x


def rope_tables(rope: RotaryEmbedding2d, hw: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """``(cos_h, sin_h, cos_w, sin_w)``, float32 arrays of shape (head_dim / 4, H) and (.., W): the
    model's own angles (bitwise), per row and per column."""
    with torch.no_grad():
        row, col = rope._angles(hw[0]).t(), rope._angles(hw[1]).t()  # (D/4, H), (D/4, W)
        return tuple(fn(t).numpy() for t in (row, col) for fn in (torch.cos, torch.sin))


def _rope(g: _Graph, x: str, model: NAF, hw: tuple[int, int], encoder_ops: str) -> str:
    rope = model.image_encoder.rope
    cos_h, sin_h, cos_w, sin_w = rope_tables(rope, hw)
    if encoder_ops in ("rope", "fused"):
        tables = [g.const(t, n) for t, n in zip((cos_h, sin_h, cos_w, sin_w), ("rope_cos_h", "rope_sin_h",
                                                                                "rope_cos_w", "rope_sin_w"))]
        return g.naf_op(AXIAL_ROPE_OP, [x, *tables], "axial_rope", [g.batch, rope.num_heads * rope.head_dim, *hw],
                        num_heads=rope.num_heads)
    h, w = hw
    half = rope.head_dim // 2
    tables = []
    for rows, cols in ((cos_h, cos_w), (sin_h, sin_w)):
        rows = g.op("Expand", [g.const(rows[:, :, None], "rope_row"), g.ints([half // 2, h, w])])
        cols = g.op("Expand", [g.const(cols[:, None, :], "rope_col"), g.ints([half // 2, h, w])])
        tables.append(g.op("Concat", [rows, cols], axis=0))  # (D/2, H, W)
    cos, sin = tables
    x = g.reshape(x, [0, rope.num_heads, 2, half, h, w])
    first = g.op("Slice", [x, g.ints([0]), g.ints([1]), g.ints([2])])
    second = g.op("Slice", [x, g.ints([1]), g.ints([2]), g.ints([2])])
    out_first = g.op("Sub", [g.op("Mul", [first, cos]), g.op("Mul", [second, sin])])
    out_second = g.op("Add", [g.op("Mul", [second, cos]), g.op("Mul", [first, sin])])
    out = g.op("Concat", [out_first, out_second], axis=2)
    return g.reshape(out, [0, rope.num_heads * rope.head_dim, h, w])


def _attention_fused(g, q, k, v, model, channels, in_hw, out_hw) -> str:
    rows = neighborhood_index(in_hw[0], out_hw[0], model.kernel_size).to(torch.int32)
    cols = neighborhood_index(in_hw[1], out_hw[1], model.kernel_size).to(torch.int32)
    return g.naf_op(ATTENTION_OP, [q, k, v, g.const(rows, "row_index"), g.const(cols, "col_index")],
                    "cross_scale_attention", [g.batch, channels, *out_hw], num_heads=model.num_heads,
                    scale=float(model.scale))


def _attention_cells(g, q, k, v, model, dq_all, channels, in_hw, out_hw) -> str:
    """Divisible ratios: all queries of one low-resolution cell share one K x K window, so the
    attention is a batched matrix product over cells."""
    (h, w), (out_h, out_w) = in_hw, out_hw
    heads, kk = model.num_heads, model.kernel_size
    dq, e = dq_all // heads, channels // heads
    dh, dw = out_h // h, out_w // w
    # Window of each cell along each axis: the window of the cell's first output row/column.
    row_win = neighborhood_index(h, out_h, kk)[::dh]  # (h, K)
    col_win = neighborhood_index(w, out_w, kk)[::dw]  # (w, K)

    def windows(x: str, d: int) -> str:  # (B, n*d, h, w) -> (B, n, h*w, K*K, d)
        x = g.reshape(x, [0, heads, d, h, w])
        x = g.op("Gather", [x, g.const(row_win, "row_windows")], axis=3)  # B n d h K w
        x = g.op("Gather", [x, g.const(col_win, "col_windows")], axis=5)  # B n d h K w K
        x = g.transpose(x, [0, 1, 3, 5, 4, 6, 2])  # B n h w K K d
        return g.reshape(x, [0, heads, h * w, kk * kk, d])

    qc = g.reshape(q, [0, heads, dq, h, dh, w, dw])
    qc = g.transpose(qc, [0, 1, 3, 5, 4, 6, 2])  # B n h w dh dw dq
    qc = g.reshape(qc, [0, heads, h * w, dh * dw, dq])
    kt = g.transpose(windows(k, dq), [0, 1, 2, 4, 3])  # B n cells dq KK
    logits = g.op("Mul", [g.matmul(qc, kt), g.const(np.float32(model.scale), "scale")])
    probs = g.op("Softmax", [logits], axis=-1)
    out = g.matmul(probs, windows(v, e))  # B n cells (dh dw) e
    out = g.reshape(out, [0, heads, h, w, dh, dw, e])
    out = g.transpose(out, [0, 1, 6, 2, 4, 3, 5])  # B n e h dh w dw
    return g.reshape(out, [0, channels, out_h, out_w])


def _attention_gather(g, q, k, v, model, dq_all, channels, in_hw, out_hw) -> str:
    """Any ratio: each output row attends to K full low-resolution rows (gathered), and the
    K column window of each output column is selected with exact one-hot matrix products."""
    (h, w), (out_h, out_w) = in_hw, out_hw
    heads, kk = model.num_heads, model.kernel_size
    dq, e = dq_all // heads, channels // heads
    rows = neighborhood_index(h, out_h, kk)  # (H, K)
    cols = neighborhood_index(w, out_w, kk)  # (W, K)
    onehot = F.one_hot(cols, w).to(torch.float32)  # (W, K, w): [j, c, x] = 1 if cols[j, c] == x
    select = g.const(onehot.permute(0, 2, 1).contiguous(), "col_select")  # (W, w, K)
    spread = g.const(onehot, "col_spread")  # (W, K, w)

    def key_rows(x: str, d: int) -> str:  # (B, n*d, h, w) -> (B, n, H, K, w, d)
        x = g.reshape(x, [0, heads, d, h, w])
        x = g.op("Gather", [x, g.const(rows, "row_windows")], axis=3)  # B n d H K w
        return g.transpose(x, [0, 1, 3, 4, 5, 2])

    qr = g.transpose(g.reshape(q, [0, heads, dq, out_h, out_w]), [0, 1, 3, 4, 2])  # B n H W dq
    kr = g.transpose(g.reshape(key_rows(k, dq), [0, heads, out_h, kk * w, dq]), [0, 1, 2, 4, 3])
    scores = g.reshape(g.matmul(qr, kr), [0, heads, out_h, out_w, kk, w])  # B n H W K w
    logits = g.matmul(scores, select)  # B n H W K K
    logits = g.op("Mul", [g.reshape(logits, [0, heads, out_h, out_w, kk * kk]), g.const(np.float32(model.scale), "scale")])
    probs = g.reshape(g.op("Softmax", [logits], axis=-1), [0, heads, out_h, out_w, kk, kk])
    dense = g.reshape(g.matmul(probs, spread), [0, heads, out_h, out_w, kk * w])  # duplicates add
    vr = g.reshape(key_rows(v, e), [0, heads, out_h, kk * w, e])
    out = g.matmul(dense, vr)  # B n H W e
    out = g.transpose(out, [0, 1, 4, 2, 3])
    return g.reshape(out, [0, channels, out_h, out_w])


def build_onnx(
    model: NAF,
    *,
    image_size: int | Sequence[int],
    feature_size: int | Sequence[int],
    channels: int,
    output_size: int | Sequence[int],
    attention: str = "fused",
    dynamic_batch: bool = False,
    encoder_ops: str = "onnx",
) -> onnx.ModelProto:
    """Build the ONNX model in memory (see :func:`export_onnx`)."""
    if attention not in ("fused", "portable"):
        raise ValueError(f"attention: expected 'fused' or 'portable', got {attention!r}")
    if encoder_ops not in ENCODER_OPS:
        raise ValueError(f"encoder_ops: expected one of {ENCODER_OPS}, got {encoder_ops!r}")
    image_hw = _size_pair("image_size", image_size)
    in_hw = _size_pair("feature_size", feature_size)
    out_hw = _size_pair("output_size", output_size)
    # Validate exactly as the model's forward would, on stand-ins that allocate nothing.
    model.check_inputs(torch.empty(1, 3, *image_hw, device="meta"), torch.empty(1, channels, *in_hw, device="meta"),
                       out_hw)

    batch: int | str = "batch" if dynamic_batch else 1
    g = _Graph()
    g.batch = batch
    # Image encoder input size: the release's resize rule.
    (ih, iw), (oh, ow) = image_hw, out_hw
    enc_hw = (min(ih, 4 * oh, 4 * ow), min(iw, 4 * ow, 4 * oh)) if ih > 4 * oh or iw > 4 * ow else image_hw
    x = _resize_axes(g, INPUT_NAMES[0], image_hw, enc_hw, "bilinear")
    encoder = model.image_encoder
    branches = [_encoder_branch(g, x, b, enc_hw, encoder_ops) for b in (encoder.encoder, encoder.sem_encoder)]
    x = g.op("Concat", branches, axis=1)
    encoded = _resize_axes(g, x, enc_hw, out_hw, "pool")
    queries = _rope(g, encoded, model, out_hw, encoder_ops)
    keys = _resize_axes(g, queries, out_hw, in_hw, "pool")
    dq_all = model.dim
    with g.scope(ATTENTION_SCOPE):
        if attention == "fused":
            out = _attention_fused(g, queries, keys, INPUT_NAMES[1], model, channels, in_hw, out_hw)
        elif out_hw[0] % in_hw[0] == 0 and out_hw[1] % in_hw[1] == 0:
            out = _attention_cells(g, queries, keys, INPUT_NAMES[1], model, dq_all, channels, in_hw, out_hw)
        else:
            out = _attention_gather(g, queries, keys, INPUT_NAMES[1], model, dq_all, channels, in_hw, out_hw)
    g.nodes.append(helper.make_node("Identity", [out], [OUTPUT_NAME], name="output"))

    inputs = [
        helper.make_tensor_value_info(INPUT_NAMES[0], TensorProto.FLOAT, [batch, 3, *image_hw]),
        helper.make_tensor_value_info(INPUT_NAMES[1], TensorProto.FLOAT, [batch, channels, *in_hw]),
    ]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, channels, *out_hw])]
    graph = helper.make_graph(g.nodes, "naf", inputs, outputs, g.initializers, value_info=g.value_info)
    opsets = [helper.make_opsetid("", OPSET)]
    if attention == "fused" or encoder_ops != "onnx":
        opsets.append(helper.make_opsetid(ATTENTION_DOMAIN, 1))
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="naf-export")
    onnx_model.ir_version = 8  # readable by every runtime this project targets
    meta = {
        "naf_export.attention": attention,
        "naf_export.encoder_ops": encoder_ops,
        "naf_export.image_size": f"{image_hw[0]}x{image_hw[1]}",
        "naf_export.feature_size": f"{in_hw[0]}x{in_hw[1]}",
        "naf_export.output_size": f"{out_hw[0]}x{out_hw[1]}",
        "naf_export.channels": str(channels),
        # The tensors of NAF.stages(), for `naf-export validate --stages`.
        STAGES_KEY: json.dumps({"encoder": encoded, "queries": queries, "keys": keys, "output": OUTPUT_NAME}),
    }
    helper.set_model_props(onnx_model, meta)
    return onnx_model


def export_onnx(
    model: NAF,
    path: str | os.PathLike[str],
    *,
    image_size: int | Sequence[int],
    feature_size: int | Sequence[int],
    channels: int,
    output_size: int | Sequence[int],
    attention: str = "fused",
    dynamic_batch: bool = False,
    encoder_ops: str = "onnx",
) -> Path:
    """Write ``model`` as ONNX for fixed image, feature and output sizes; return the path.

    ``attention="fused"`` needs the naf-export plugin at run time; ``"portable"`` runs anywhere.
    With ``dynamic_batch`` the batch dimension is symbolic (``batch``). ``encoder_ops="rope"`` emits a
    ``naf::AxialRoPE`` node (ONNX Runtime and OpenVINO plugins), ``"fused"`` also ``naf::GroupNormSiLU``
    nodes (ONNX Runtime plugin only; CPU).
    The file passes ``onnx.checker`` and shape inference.
    """
    onnx_model = build_onnx(
        model, image_size=image_size, feature_size=feature_size, channels=channels,
        output_size=output_size, attention=attention, dynamic_batch=dynamic_batch, encoder_ops=encoder_ops,
    )
    register_naf_schemas()
    onnx.checker.check_model(onnx_model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(onnx_model, path)
    return path

"""One-node CrossScaleNeighborhoodAttention models, random inputs for them and the PyTorch
reference outputs (attention; the fused GroupNorm+SiLU+pad), shared by the kernel and
runtime-adapter tests."""

from __future__ import annotations

import numpy as np
import torch

from naf_export.attention import cross_scale_neighborhood_attention, neighborhood_index


INPUTS = ("query", "key", "value", "row_index", "col_index")


def attention_node_model(elem: int, attrs: dict, shapes: dict, naf_opset: int = 1) -> bytes:
    """A serialized model holding one naf::CrossScaleNeighborhoodAttention node; ``shapes`` maps
    input names to dims (missing: unknown rank), ``elem`` is the float element type, ``naf_opset``
    the version of the naf domain it imports."""
    from onnx import TensorProto, helper

    types = {"row_index": TensorProto.INT32, "col_index": TensorProto.INT32}
    inputs = [helper.make_tensor_value_info(n, types.get(n, elem), shapes.get(n)) for n in INPUTS]
    node = helper.make_node("CrossScaleNeighborhoodAttention", list(INPUTS), ["out"], domain="naf", **attrs)
    graph = helper.make_graph([node], "csna", inputs, [helper.make_tensor_value_info("out", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("naf", naf_opset)])
    return model.SerializeToString()


def feeds(seed: int, b: int, dq_all: int, c_all: int, in_hw, out_hw, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    (h, w), (big_h, big_w) = in_hw, out_hw
    return {
        "query": rng.standard_normal((b, dq_all, big_h, big_w)).astype(dtype),
        "key": rng.standard_normal((b, dq_all, h, w)).astype(dtype),
        "value": rng.standard_normal((b, c_all, h, w)).astype(dtype),
        "row_index": neighborhood_index(h, big_h).to(torch.int32).numpy(),
        "col_index": neighborhood_index(w, big_w).to(torch.int32).numpy(),
    }


def reference(f: dict[str, np.ndarray], heads: int, scale: float) -> torch.Tensor:
    q, k, v = (torch.from_numpy(f[n].astype(np.float32)) for n in ("query", "key", "value"))
    return cross_scale_neighborhood_attention(q, k, v, heads, 9, scale)


def rel_l2(out: np.ndarray, ref: torch.Tensor) -> float:
    diff = torch.from_numpy(out.astype(np.float64)) - ref.double()
    return float(diff.norm() / ref.double().norm())


def group_norm_silu_reference(x, gamma, beta, groups: int, pad: int, eps: float = 1e-5) -> torch.Tensor:
    """``naf::GroupNormSiLU`` in PyTorch float64: GroupNorm, SiLU, reflect padding. Arrays or tensors."""
    x, gamma, beta = (torch.as_tensor(t).double() for t in (x, gamma, beta))
    y = torch.nn.functional.silu(torch.nn.functional.group_norm(x, groups, gamma, beta, eps))
    return torch.nn.functional.pad(y, (pad,) * 4, mode="reflect") if pad else y

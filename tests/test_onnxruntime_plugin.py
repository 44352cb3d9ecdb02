"""libnaf_onnxruntime: one-node ONNX models through onnxruntime vs the PyTorch reference op, and
malformed nodes failing with an onnxruntime exception that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from op_feeds import attention_node_model, feeds, group_norm_silu_reference, reference, rel_l2
from native_build import library

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto  # noqa: E402



@pytest.fixture(scope="module")
def ort_lib() -> str:
    return str(library("naf_onnxruntime"))


def make_model(
    elem: int = TensorProto.FLOAT,
    attrs: dict | None = None,
    shapes: dict[str, list[int]] | None = None,
) -> bytes:
    attrs = {"num_heads": 2, "scale": 0.25} if attrs is None else attrs
    return attention_node_model(elem, attrs, shapes or {})


def session(ort_lib: str, model: bytes, threads: int = 0) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.register_custom_ops_library(ort_lib)
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


CASES = [
    (1, 32, 48, 2, (9, 9), (36, 27)),
    (2, 32, 48, 2, (16, 15), (41, 70)),  # non-integer ratios, batch 2
    (1, 64, 96, 4, (28, 28), (112, 112)),  # e = 24 != dq = 16
]


@pytest.mark.parametrize("case", CASES, ids=["small", "nonint-b2", "ratio4"])
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_matches_reference(ort_lib: str, case, threads: int) -> None:
    b, dq_all, c_all, heads, in_hw, out_hw = case
    f = feeds(0, b, dq_all, c_all, in_hw, out_hw)
    sess = session(ort_lib, make_model(attrs={"num_heads": heads, "scale": 0.3}), threads)
    (out,) = sess.run(None, f)
    assert out.dtype == np.float32 and out.shape == (b, c_all, *out_hw)
    assert rel_l2(out, reference(f, heads, 0.3)) < 1e-5


def test_float16_matches_reference(ort_lib: str) -> None:
    b, dq_all, c_all, heads, in_hw, out_hw = CASES[1]
    f = feeds(1, b, dq_all, c_all, in_hw, out_hw, np.float16)
    sess = session(ort_lib, make_model(TensorProto.FLOAT16, {"num_heads": heads, "scale": 0.3}))
    (out,) = sess.run(None, f)
    assert out.dtype == np.float16 and out.shape == (b, c_all, *out_hw)
    ref = reference(f, heads, 0.3)
    assert rel_l2(out, ref) < 2e-3  # float16 output rounding: ~3e-4 expected
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(out).double().flatten(), ref.double().flatten(), dim=0)
    assert cosine.item() > 0.999


def test_output_shape_is_inferred(ort_lib: str) -> None:
    shapes = {"query": [2, 8, 41, 70], "key": [2, 8, 16, 15], "value": [2, 12, 16, 15]}
    sess = session(ort_lib, make_model(shapes=shapes))
    assert sess.get_outputs()[0].shape == [2, 12, 41, 70]
    # Symbolic input dims load and run too (ORT does not surface symbolic graph-output shapes).
    shapes = {"query": ["B", 8, "H", "W"], "key": ["B", 8, 16, 15], "value": ["B", 12, 16, 15]}
    sess = session(ort_lib, make_model(shapes=shapes))
    (out,) = sess.run(None, feeds(2, 2, 8, 12, (16, 15), (41, 70)))
    assert out.shape == (2, 12, 41, 70)


# ---------------------------------------------------------------------------------------------
# Malformed nodes: an onnxruntime exception (never a crash) whose message names the problem.


def assert_ort_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    assert type(excinfo.value).__module__.startswith("onnxruntime"), type(excinfo.value)
    message = str(excinfo.value)
    assert "CrossScaleNeighborhoodAttention" in message
    for fragment in fragments:
        assert fragment in message, message


def run_malformed(ort_lib: str, f: dict[str, np.ndarray], **model_kwargs) -> pytest.ExceptionInfo:
    with pytest.raises(Exception) as excinfo:
        session(ort_lib, make_model(**model_kwargs)).run(None, f)
    return excinfo


def test_index_out_of_range(ort_lib: str) -> None:
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["row_index"] = f["row_index"].copy()
    f["row_index"][12, 3] = 10
    assert_ort_error(run_malformed(ort_lib, f), "row_index: entry [12, 3] = 10 is outside [0, h=10)")
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["col_index"] = f["col_index"].copy()
    f["col_index"][19, 8] = -3
    assert_ort_error(run_malformed(ort_lib, f), "col_index: entry [19, 8] = -3 is outside [0, w=9)")


def test_wrong_ranks(ort_lib: str) -> None:
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["query"] = f["query"][0]
    assert_ort_error(run_malformed(ort_lib, f), "query: expected rank 4", "[8, 21, 20]")
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["col_index"] = f["col_index"].reshape(-1)
    assert_ort_error(run_malformed(ort_lib, f), "col_index: expected rank 2")


def test_mismatched_batch_and_sizes(ort_lib: str) -> None:
    f = feeds(0, 2, 8, 8, (10, 9), (21, 20))
    f["key"] = f["key"][:1]
    assert_ort_error(run_malformed(ort_lib, f), "key: batch size 1 differs from the query's 2")
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["value"] = f["value"][:, :, :, :8]
    assert_ort_error(run_malformed(ort_lib, f), "value: spatial size [10, 8] differs from the key's [10, 9]")
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["row_index"] = f["row_index"][:20]
    assert_ort_error(run_malformed(ort_lib, f), "row_index: has 20 rows, expected H=21")


def test_channels_not_divisible_by_heads(ort_lib: str) -> None:
    f = feeds(0, 1, 8, 6, (10, 9), (21, 20))
    excinfo = run_malformed(ort_lib, f, attrs={"num_heads": 4, "scale": 0.5})
    assert_ort_error(excinfo, "value: channel count 6 is not divisible by num_heads=4")


def test_map_smaller_than_kernel(ort_lib: str) -> None:
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["key"], f["value"] = f["key"][..., :5], f["value"][..., :5]
    f["col_index"] = np.minimum(f["col_index"], 4)
    assert_ort_error(run_malformed(ort_lib, f), "key: spatial size (h=10, w=5) is smaller than kernel_size=9")


@pytest.mark.parametrize(
    "attrs, fragment",
    [
        ({"scale": 0.5}, "attribute 'num_heads' (int) is required"),
        ({"num_heads": 2}, "attribute 'scale' (float) is required"),
        ({"num_heads": 0, "scale": 0.5}, "attribute 'num_heads' must be > 0, got 0"),
        ({"num_heads": 2.0, "scale": 0.5}, "attribute 'num_heads' (int) is required and missing or not an int"),
    ],
    ids=["no-heads", "no-scale", "zero-heads", "float-heads"],
)
def test_bad_attributes(ort_lib: str, attrs: dict, fragment: str) -> None:
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    assert_ort_error(run_malformed(ort_lib, f, attrs=attrs), fragment)


def test_session_still_usable_after_an_error(ort_lib: str) -> None:
    good = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    bad = dict(good, row_index=np.full_like(good["row_index"], 99))
    sess = session(ort_lib, make_model())
    with pytest.raises(Exception, match="row_index: entry"):
        sess.run(None, bad)
    (out,) = sess.run(None, good)
    assert rel_l2(out, reference(good, 2, 0.25)) < 1e-5


# ---------------------------------------------------------------------------------------------
# naf::GroupNormSiLU

def group_norm_model(elem: int = TensorProto.FLOAT, attrs: dict | None = None, x_shape=None) -> bytes:
    from onnx import helper

    attrs = {"num_groups": 4, "pad": 1} if attrs is None else attrs
    inputs = [helper.make_tensor_value_info("x", elem, x_shape)] + [
        helper.make_tensor_value_info(n, elem, None) for n in ("gamma", "beta")]
    node = helper.make_node("GroupNormSiLU", ["x", "gamma", "beta"], ["y"], domain="naf", **attrs)
    graph = helper.make_graph([node], "gn", inputs, [helper.make_tensor_value_info("y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("naf", 1)]).SerializeToString()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, groups, pad", [((1, 16, 9, 9), 4, 1), ((2, 32, 13, 37), 8, 0), ((2, 8, 20, 5), 2, 2)])
def test_group_norm_silu_matches_pytorch(ort_lib: str, threads: int, shape, groups: int, pad: int) -> None:
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    gamma, beta = (rng.random(shape[1]) + 0.5).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
    sess = session(ort_lib, group_norm_model(attrs={"num_groups": groups, "pad": pad, "epsilon": 1e-5},
                                             x_shape=list(shape)), threads)
    out = sess.run(None, {"x": x, "gamma": gamma, "beta": beta})[0]
    assert rel_l2(out, group_norm_silu_reference(x, gamma, beta, groups, pad)) < 1e-6


def test_group_norm_silu_float16(ort_lib: str) -> None:
    rng = np.random.default_rng(1)
    x, gamma, beta = rng.standard_normal((1, 8, 6, 10)), rng.random(8) + 0.5, rng.standard_normal(8)
    out = session(ort_lib, group_norm_model(TensorProto.FLOAT16)).run(
        None, {"x": x.astype(np.float16), "gamma": gamma.astype(np.float16), "beta": beta.astype(np.float16)})[0]
    assert out.dtype == np.float16 and out.shape == (1, 8, 8, 12)
    ref = group_norm_silu_reference(*(a.astype(np.float16).astype(np.float32) for a in (x, gamma, beta)), 4, 1)
    assert rel_l2(out, ref) < 1e-3


@pytest.mark.parametrize("attrs, x, fragment", [
    ({"num_groups": 3}, (1, 8, 4, 4), "GroupNormSiLU: num_groups: expected a positive divisor of the channel count C=8, got 3"),
    ({}, (1, 8, 4, 4), "GroupNormSiLU: attribute 'num_groups' (int) is required"),
    ({"num_groups": 2, "pad": 4}, (1, 8, 4, 9), "GroupNormSiLU: pad: reflect padding needs 0 <= pad < min(H, W) = 4, got 4"),
    ({"num_groups": 2}, (8, 4, 4), "GroupNormSiLU: X: expected rank 4 (N, C, H, W), got shape [8, 4, 4]"),
])  # fmt: skip
def test_group_norm_silu_bad_nodes(ort_lib: str, attrs: dict, x, fragment: str) -> None:
    ones = np.ones(x[1] if len(x) == 4 else 4, np.float32)
    with pytest.raises(Exception) as info:  # attribute errors come at session creation, the rest at run
        session(ort_lib, group_norm_model(attrs=attrs)).run(None, {"x": np.zeros(x, np.float32), "gamma": ones,
                                                                   "beta": ones})
    assert fragment in str(info.value)


def test_group_norm_silu_gamma_must_match_channels(ort_lib: str) -> None:
    sess = session(ort_lib, group_norm_model())
    with pytest.raises(Exception, match=r"gamma: expected shape \[C\] = \[8\] \(one value per channel of X\), got \[7\]"):
        sess.run(None, {"x": np.zeros((1, 8, 4, 4), np.float32), "gamma": np.ones(7, np.float32),
                        "beta": np.ones(8, np.float32)})


# ---------------------------------------------------------------------------------------------
# naf::AxialRoPE

ROPE_TABLES = ("cos_h", "sin_h", "cos_w", "sin_w")


def rope_model(elem: int = TensorProto.FLOAT, attrs: dict | None = None) -> bytes:
    from onnx import helper

    attrs = {"num_heads": 2} if attrs is None else attrs
    names = ("x", *ROPE_TABLES)
    inputs = [helper.make_tensor_value_info(n, elem, None) for n in names]
    node = helper.make_node("AxialRoPE", list(names), ["y"], domain="naf", **attrs)
    graph = helper.make_graph([node], "rope", inputs, [helper.make_tensor_value_info("y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("naf", 1)]).SerializeToString()


def rope_feeds(b: int, d: int, heads: int, h: int, w: int, dtype=np.float32):
    from naf_export.model import RotaryEmbedding2d
    from naf_export.onnx_export import rope_tables

    rope = RotaryEmbedding2d(d, heads)
    x = torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(b + d + h + w))
    feeds = {"x": x.numpy().astype(dtype), **dict(zip(ROPE_TABLES, (t.astype(dtype) for t in rope_tables(rope, (h, w)))))}
    with torch.no_grad():
        return feeds, rope(torch.from_numpy(feeds["x"].astype(np.float32)))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("b, d, heads, h, w", [(1, 32, 2, 9, 9), (2, 64, 4, 13, 37)])
def test_axial_rope_matches_the_model(ort_lib: str, threads: int, b: int, d: int, heads: int, h: int, w: int) -> None:
    feeds, ref = rope_feeds(b, d, heads, h, w)
    out = session(ort_lib, rope_model(attrs={"num_heads": heads}), threads).run(None, feeds)[0]
    assert rel_l2(out, ref) < 1e-6


def test_axial_rope_float16(ort_lib: str) -> None:
    feeds, ref = rope_feeds(1, 32, 2, 6, 10, np.float16)
    out = session(ort_lib, rope_model(TensorProto.FLOAT16)).run(None, feeds)[0]
    assert out.dtype == np.float16 and rel_l2(out, ref) < 1e-3


def test_axial_rope_bad_nodes(ort_lib: str) -> None:
    feeds, _ = rope_feeds(1, 32, 2, 6, 10)
    with pytest.raises(Exception, match="AxialRoPE: attribute 'num_heads' \\(int\\) is required"):
        session(ort_lib, rope_model(attrs={})).run(None, feeds)
    with pytest.raises(Exception, match="AxialRoPE: num_heads: expected a divisor of D=32 leaving a head size that "
                                        "is a multiple of 4, got 3"):
        session(ort_lib, rope_model(attrs={"num_heads": 3})).run(None, feeds)
    bad = dict(feeds, sin_w=feeds["sin_w"][:, :9].copy())
    with pytest.raises(Exception, match=r"AxialRoPE: sin_w: expected shape \[4, 10\] \(head_dim / 4, W\), got \[4, 9\]"):
        session(ort_lib, rope_model()).run(None, bad)

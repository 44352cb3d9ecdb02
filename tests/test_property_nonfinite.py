"""Property test: the fused operator in ONNX Runtime and OpenVINO against the PyTorch reference
(``naf_export.attention`` with explicit index tables) on random shapes, random index tables, random
NaN/Inf values in query, key and value, and random (sometimes non-finite) scales. The outputs must
be NaN/Inf at exactly the reference's positions (NaN positions included) and close elsewhere.

Examples are derandomized (the same every run), so CI is reproducible; HYPOTHESIS_PROFILE=explore
draws fresh ones.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from naf_export.attention import cross_scale_neighborhood_attention
from op_feeds import attention_node_model

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

POISON = st.sampled_from([float("nan"), float("inf"), float("-inf")])


@st.composite
def problems(draw):
    k = draw(st.sampled_from([1, 3, 5, 9]))
    heads = draw(st.integers(1, 3))
    dq, e = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    b = draw(st.integers(1, 2))
    h, w = draw(st.integers(k, k + 5)), draw(st.integers(k, k + 5))
    big_h, big_w = draw(st.integers(h, 3 * h)), draw(st.integers(w, 3 * w))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    arrays = {
        "query": rng.standard_normal((b, heads * dq, big_h, big_w)).astype(np.float32),
        "key": rng.standard_normal((b, heads * dq, h, w)).astype(np.float32),
        "value": rng.standard_normal((b, heads * e, h, w)).astype(np.float32),
        # Any tables the contract allows, not only NAF's: repeated and unordered entries included.
        "row_index": rng.integers(0, h, (big_h, k)).astype(np.int32),
        "col_index": rng.integers(0, w, (big_w, k)).astype(np.int32),
    }
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["query", "key", "value"]))
        flat = arrays[name].reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(POISON)
    scale = draw(st.one_of(st.floats(0.05, 1.0), POISON)) if draw(st.booleans()) else 0.5
    return arrays, heads, float(np.float32(scale))


def _reference(arrays, heads: int, scale: float) -> np.ndarray:
    t = {n: torch.from_numpy(a) for n, a in arrays.items()}
    return cross_scale_neighborhood_attention(
        t["query"], t["key"], t["value"], heads, arrays["row_index"].shape[1], scale,
        row_index=t["row_index"], col_index=t["col_index"]).numpy()


def _model(arrays, heads: int, scale: float) -> bytes:
    shapes = {n: list(a.shape) for n, a in arrays.items()}
    return attention_node_model(TensorProto.FLOAT, dict(num_heads=heads, scale=scale), shapes)


def _assert_same(out: np.ndarray, ref: np.ndarray, runtime: str) -> None:
    assert out.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg=f"{runtime}: NaN positions")
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref), err_msg=f"{runtime}: Inf positions")
    np.testing.assert_array_equal(out[np.isinf(out)], ref[np.isinf(ref)], err_msg=f"{runtime}: Inf signs")
    finite = np.isfinite(ref)
    np.testing.assert_allclose(out[finite], ref[finite], rtol=2e-5, atol=2e-5, err_msg=f"{runtime}: finite values")


@pytest.fixture(scope="module")
def runtimes():
    import onnxruntime as ort
    import openvino as ov

    from naf_export.native import openvino_library_path, ort_library_path

    core = ov.Core()
    core.add_extension(openvino_library_path())
    plugin = ort_library_path()

    def run_ort(model: bytes, feeds):
        options = ort.SessionOptions()
        options.register_custom_ops_library(plugin)
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    def run_ov(model: bytes, feeds):
        compiled = core.compile_model(core.read_model(model, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled(feeds)[compiled.output(0)]

    return {"onnxruntime": run_ort, "openvino": run_ov}


@given(problem=problems())
def test_fused_op_matches_reference_with_non_finite_values(runtimes, problem):
    arrays, heads, scale = problem
    ref = _reference(arrays, heads, scale)
    model = _model(arrays, heads, scale)
    for name, run in runtimes.items():
        _assert_same(np.asarray(run(model, arrays)), ref, name)

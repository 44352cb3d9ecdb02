"""ONNX Runtime INT8 that is INT8: every convolution of the quantized model runs as QLinearConv, and
the GroupNorms between them run on the 8-bit tensors (naf::QGroupNormSiLU), not as float maps
dequantized and requantized around a float kernel."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from naf_export import load_naf
from naf_export.calibration import load_calibration_set
from naf_export.config import ExportConfig
from naf_export.native import ort_library_path
from naf_export.onnx_export import export_onnx
from naf_export.quantize import quantize_int8
from op_feeds import group_norm_silu_reference

CONFIG = ExportConfig((64, 64), (9, 9), 16, (18, 18))


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_naf()
    fp32 = export_onnx(model, folder / "naf.onnx", image_size=CONFIG.image_size, feature_size=CONFIG.feature_size,
                       channels=CONFIG.channels, output_size=CONFIG.output_size, attention="fused",
                       encoder_ops="fused")
    calibration = load_calibration_set(None, CONFIG, limit=4, progress=False)
    return {runtime: quantize_int8(fp32, folder / f"naf_{runtime}_int8.onnx", calibration, runtime=runtime,
                                   progress=False) for runtime in ("onnxruntime", "tensorrt")}


def _optimized_ops(path: Path, tmp_path: Path) -> list[str]:
    options = ort.SessionOptions()
    options.register_custom_ops_library(ort_library_path())
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node]


def test_every_convolution_runs_as_qlinearconv(int8_models, tmp_path):
    ops = _optimized_ops(int8_models["onnxruntime"], tmp_path)
    assert ops.count("QLinearConv") == 10 and "Conv" not in ops  # the encoder's ten convolutions
    assert ops.count("QGroupNormSiLU") == 8 and "GroupNormSiLU" not in ops
    meta = {p.key: p.value for p in onnx.load(int8_models["onnxruntime"]).metadata_props}
    assert meta["naf_export.quantized_group_norm_silu"] == "8"


def test_tensorrt_form_keeps_float_biases_and_int8_activations(int8_models):
    model = onnx.load(int8_models["tensorrt"])
    initializers = {i.name: i for i in model.graph.initializer}
    zero_points = [initializers[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.data_type == TensorProto.INT8 and not numpy_helper.to_array(z).any() for z in zero_points)
    assert not any(n.op_type == "DequantizeLinear" and initializers.get(n.input[0]) is not None
                   and initializers[n.input[0]].data_type == TensorProto.INT32 for n in model.graph.node)


def test_int8_model_stays_close_to_pytorch(int8_models):
    from naf_export.pipeline import parity_against_pytorch, sample_inputs
    from naf_export.runners.onnxruntime import OnnxRuntimeRunner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_naf()
    result = parity_against_pytorch(model, OnnxRuntimeRunner(int8_models["onnxruntime"]), sample_inputs(CONFIG, 2),
                                    CONFIG.output_size)
    assert result["cosine_mean"] > 0.999


def _qgn_model(shape, elem, pad: int, groups: int, scalars: dict) -> bytes:
    names = ("X", "x_scale", "x_zero_point", "gamma", "beta", "y_scale", "y_zero_point")
    inits = [numpy_helper.from_array(v, name=k) for k, v in scalars.items()]
    node = helper.make_node("QGroupNormSiLU", list(names), ["Y"], domain="naf", num_groups=groups, pad=pad)
    graph = helper.make_graph([node], "qgn", [helper.make_tensor_value_info("X", elem, shape)],
                              [helper.make_tensor_value_info("Y", elem, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("naf", 1)])
    return model.SerializeToString()


@pytest.mark.parametrize("dtype, elem", [(np.uint8, TensorProto.UINT8), (np.int8, TensorProto.INT8)])
def test_qgroupnormsilu_node_in_onnxruntime(dtype, elem):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, size=(2, 16, 11, 13)).astype(dtype)
    scalars = {"x_scale": np.array(0.05, np.float32), "x_zero_point": np.array(info.min + 100, dtype),
               "gamma": rng.uniform(0.5, 1.5, 16).astype(np.float32), "beta": rng.standard_normal(16).astype(np.float32),
               "y_scale": np.array(0.02, np.float32), "y_zero_point": np.array(info.min + 10, dtype)}
    options = ort.SessionOptions()
    options.register_custom_ops_library(ort_library_path())
    session = ort.InferenceSession(_qgn_model(list(x.shape), elem, 1, 4, scalars), options,
                                   providers=["CPUExecutionProvider"])
    out = session.run(None, {"X": x})[0]
    real = torch.from_numpy((x.astype(np.float64) - int(scalars["x_zero_point"])) * 0.05)
    expected = np.clip(np.rint(group_norm_silu_reference(real, scalars["gamma"], scalars["beta"], 4, 1).numpy() / 0.02)
                       + int(scalars["y_zero_point"]), info.min, info.max)
    assert out.dtype == dtype and out.shape == (2, 16, 13, 15)
    assert np.abs(out.astype(np.int32) - expected.astype(np.int32)).max() <= 1


def test_qgroupnormsilu_refuses_per_channel_scales():
    scalars = {"x_scale": np.full(16, 0.05, np.float32), "x_zero_point": np.array(0, np.uint8),
               "gamma": np.ones(16, np.float32), "beta": np.zeros(16, np.float32),
               "y_scale": np.array(0.02, np.float32), "y_zero_point": np.array(0, np.uint8)}
    options = ort.SessionOptions()
    options.register_custom_ops_library(ort_library_path())
    session = ort.InferenceSession(_qgn_model([1, 16, 4, 4], TensorProto.UINT8, 0, 4, scalars), options,
                                   providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="x_scale: expected one value"):
        session.run(None, {"X": np.zeros((1, 16, 4, 4), np.uint8)})

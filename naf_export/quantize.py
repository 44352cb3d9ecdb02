"""Reduced-precision ONNX models: float16 conversion and INT8 static QDQ quantization.

Both start from the float32 model written by :func:`naf_export.onnx_export.export_onnx` and keep
its float32 inputs and output, so callers feed the same arrays whatever the precision.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .contract import INPUT_NAMES, OUTPUT_NAME
from .onnx_export import ATTENTION_SCOPE, GROUP_NORM_SCOPE

__all__ = ["QUANTIZED_OP_TYPES", "convert_fp16", "float_scopes", "quantize_int8"]

#: Operators given INT8 inputs: the convolutions hold almost all of NAF's arithmetic.
QUANTIZED_OP_TYPES = ("Conv", "Pad")


def _load(path: str | os.PathLike[str]) -> onnx.ModelProto:
    try:
        return onnx.load(os.fspath(path))
    except Exception as exc:  # protobuf raises DecodeError and friends for corrupt files
        raise ValueError(f"model: cannot read {os.fspath(path)!r} as ONNX ({exc})") from exc


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Float16 weights and activations, float32 graph inputs and output.

    Every float32 initializer becomes float16 and the inputs are cast once on entry, so every
    operator, the attention node included (float16 storage, float32 accumulation inside the
    kernel), runs on float16 tensors; the output is cast back to float32 on exit.
    """
    model = _load(src)
    graph = model.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    renames = {}
    casts = []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = f"{value.name}_fp16"
            renames[value.name] = half
            casts.append(helper.make_node("Cast", [value.name], [half], name=f"cast_{value.name}_fp16",
                                          to=TensorProto.FLOAT16))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == OUTPUT_NAME:
                node.output[i] = f"{OUTPUT_NAME}_fp16"
    nodes = casts + list(graph.node)
    nodes.append(helper.make_node("Cast", [f"{OUTPUT_NAME}_fp16"], [OUTPUT_NAME], name="cast_output_fp32",
                                  to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "naf_export.precision": "fp16"})
    dst = Path(dst)
    onnx.save_model(model, dst)
    return dst


def float_scopes() -> tuple[str, ...]:
    """Node-name scopes kept in float by default: GroupNorm (statistics over whole maps) and the
    attention (softmax logits)."""
    return (GROUP_NORM_SCOPE, ATTENTION_SCOPE)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over (image, features) pairs."""

    def __init__(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], progress: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=len(pairs), desc="int8 calibration", unit="img", disable=not progress)
        self._items = iter(pairs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        pair = next(self._items, None)
        if pair is None:
            self._bar.close()
            return None
        self._bar.update()
        return dict(zip(INPUT_NAMES, (np.ascontiguousarray(a, dtype=np.float32) for a in pair)))


def _ranges(model_path: Path, pairs, plugin: str | None, work: Path, progress: bool):
    """Min/max of every activation, from ONNX Runtime with the plugin loaded (ORT's own
    calibrator opens its session without custom-op libraries)."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    class PluginMinMax(MinMaxCalibrater):
        def create_inference_session(self) -> None:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if plugin is not None:
                options.register_custom_ops_library(plugin)
            self.infer_session = ort.InferenceSession(self.augmented_model_path, options,
                                                      providers=self.execution_providers)

    calibrator = PluginMinMax(model_path, op_types_to_calibrate=list(QUANTIZED_OP_TYPES),
                              augmented_model_path=str(work / "augmented.onnx"), symmetric=True)
    calibrator.augment_graph()
    calibrator.create_inference_session()
    calibrator.collect_data(_Reader(pairs, progress))
    return calibrator.compute_data()


def quantize_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    plugin: str | os.PathLike[str] | None = None,
    keep_float: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Static INT8 quantization in QDQ form, calibrated (min/max) on ``calibration``.

    Convolution weights are symmetric per output channel, activations symmetric per tensor
    (zero point 0), biases left in float: the form TensorRT's explicit-precision INT8 consumes
    (it dequantizes 8-bit tensors only), and one ONNX Runtime still fuses into QLinearConv. Nodes whose name lies
    in one of the ``keep_float`` scopes (default :func:`float_scopes`) stay in float32.
    ``plugin`` is the ONNX Runtime custom-op library used while calibrating a fused model
    (default: the one built with the package).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from .runners.onnxruntime import uses_naf_domain

    if len(calibration) == 0:
        raise ValueError("calibration: expected at least one (image, features) pair")
    src, dst = Path(src), Path(dst)
    model = _load(src)
    if plugin is None and uses_naf_domain(model):
        from .native import ort_library_path

        plugin = ort_library_path()
    scopes = tuple(float_scopes() if keep_float is None else keep_float)
    excluded = [n.name for n in model.graph.node if n.name.split("/", 1)[0] in scopes]
    with tempfile.TemporaryDirectory(prefix="naf_int8_") as tmp:
        work = Path(tmp)
        cache = work / "ranges.json"
        save_tensors_data(_ranges(src, calibration, None if plugin is None else os.fspath(plugin), work, progress), cache)
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(max(quiet, logging.ERROR))  # ORT logs a pre-processing hint per call
        try:
            quantize_static(
                src, dst, calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=cache,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
        finally:
            logging.getLogger().setLevel(quiet)
    quantized = _load(dst)
    helper.set_model_props(quantized, {**{p.key: p.value for p in quantized.metadata_props},
                                       "naf_export.precision": "int8"})
    onnx.save_model(quantized, dst)
    return dst

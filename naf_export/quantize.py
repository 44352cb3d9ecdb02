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

from .contract import (ATTENTION_DOMAIN, GROUP_NORM_SILU_OP, INPUT_NAMES, OUTPUT_NAME,
                       QUANTIZED_GROUP_NORM_SILU_OP)
from .onnx_export import ATTENTION_SCOPE, GROUP_NORM_SCOPE

__all__ = ["QUANTIZED_OP_TYPES", "Int8Quantizer", "convert_fp16", "float_scopes", "fuse_quantized_group_norm",
           "quantize_int8"]

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


class Int8Quantizer:
    """Static INT8 quantization of one float32 model in QDQ form, calibrated (min/max) once on
    ``calibration`` and written as often as needed with different convolutions left in float
    (the accuracy-targeted search writes many).

    Convolution weights are int8, symmetric per output channel; activations per tensor. The rest
    is the form each ``runtime`` runs fastest:

    * ``"onnxruntime"``: uint8 activations (asymmetric) and int32 biases, the form ONNX Runtime fuses
      into QLinearConv on x86 (it fuses DequantizeLinear -> Conv -> QuantizeLinear only with a
      quantized bias, and int8 activations only where it can rewrite a Q -> DQ pair to uint8), and
      each GroupNorm between two convolutions as one 8-bit ``naf::QGroupNormSiLU``
      (:func:`fuse_quantized_group_norm`), so the convolutions chain in 8 bits;
    * ``"tensorrt"``: int8 activations with zero point 0 and float biases, the form TensorRT's
      explicit quantization consumes (it dequantizes 8-bit tensors only).

    Nodes whose name lies in one of the ``keep_float`` scopes (default :func:`float_scopes`) stay in
    float32. ``plugin`` is the ONNX Runtime custom-op library used while calibrating a fused model
    (default: the one built with the package). Use as a context manager (it holds a temporary folder).
    """

    def __init__(self, src: str | os.PathLike[str], calibration: Sequence[tuple[np.ndarray, np.ndarray]], *,
                 plugin: str | os.PathLike[str] | None = None, keep_float: Sequence[str] | None = None,
                 progress: bool = True, runtime: str = "onnxruntime") -> None:
        from onnxruntime.quantization.calibrate import save_tensors_data

        from .runners.onnxruntime import uses_naf_domain

        if runtime not in ("onnxruntime", "tensorrt"):
            raise ValueError(f"runtime: expected 'onnxruntime' or 'tensorrt', got {runtime!r}")
        if len(calibration) == 0:
            raise ValueError("calibration: expected at least one (image, features) pair")
        self.src, self.runtime = Path(src), runtime
        model = _load(self.src)
        if plugin is None and uses_naf_domain(model):
            from .native import ort_library_path

            plugin = ort_library_path()
        scopes = tuple(float_scopes() if keep_float is None else keep_float)
        self._scoped = [n.name for n in model.graph.node if n.name.split("/", 1)[0] in scopes]
        #: The convolutions this quantizer makes INT8 (unless told to leave some in float).
        self.convolutions = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in self._scoped]
        self._work = tempfile.TemporaryDirectory(prefix="naf_int8_")
        self._ranges = Path(self._work.name) / "ranges.json"
        ranges = _ranges(self.src, calibration, None if plugin is None else os.fspath(plugin), Path(self._work.name),
                         progress)
        save_tensors_data(ranges, self._ranges)

    def __enter__(self) -> Int8Quantizer:
        return self

    def __exit__(self, *exc) -> None:
        self._work.cleanup()

    def write(self, dst: str | os.PathLike[str], float_convolutions: Sequence[str] = ()) -> Path:
        """The quantized model at ``dst``, with ``float_convolutions`` (names from
        :attr:`convolutions`) left in float32."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        unknown = sorted(set(float_convolutions) - set(self.convolutions))
        if unknown:
            raise ValueError(f"float_convolutions: {unknown} are not convolutions of {str(self.src)!r}")
        ort_form = self.runtime == "onnxruntime"
        dst = Path(dst)
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(max(quiet, logging.ERROR))  # ORT logs a pre-processing hint per call
        try:
            quantize_static(
                self.src, dst, calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=True,
                activation_type=QuantType.QUInt8 if ort_form else QuantType.QInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=[*self._scoped, *float_convolutions], calibrate_method=CalibrationMethod.MinMax,
                calibration_cache_path=self._ranges,
                extra_options={"ActivationSymmetric": not ort_form, "WeightSymmetric": True, "QuantizeBias": ort_form},
            )
        finally:
            logging.getLogger().setLevel(quiet)
        quantized = _load(dst)
        fused = fuse_quantized_group_norm(quantized) if ort_form else 0
        helper.set_model_props(quantized, {**{p.key: p.value for p in quantized.metadata_props},
                                           "naf_export.precision": "int8",
                                           "naf_export.quantized_group_norm_silu": str(fused),
                                           "naf_export.float_convolutions": ",".join(float_convolutions)})
        onnx.save_model(quantized, dst)
        return dst


def quantize_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    plugin: str | os.PathLike[str] | None = None,
    keep_float: Sequence[str] | None = None,
    progress: bool = True,
    runtime: str = "onnxruntime",
) -> Path:
    """The INT8 model of ``src`` at ``dst``, every convolution quantized (see :class:`Int8Quantizer`)."""
    with Int8Quantizer(src, calibration, plugin=plugin, keep_float=keep_float, progress=progress,
                       runtime=runtime) as quantizer:
        return quantizer.write(dst)


def fuse_quantized_group_norm(model: onnx.ModelProto) -> int:
    """Replace every ``DequantizeLinear -> naf::GroupNormSiLU -> QuantizeLinear`` (the float
    GroupNorm between two INT8 convolutions of a QDQ model) by one ``naf::QGroupNormSiLU`` on the
    8-bit tensors; return how many were replaced.

    ONNX Runtime then runs each convolution as QLinearConv straight from the previous node's
    8-bit output: no float map is dequantized and requantized in between (two full passes per
    GroupNorm, and the float kernel's 4-byte traffic). Models with the standard-operator encoder
    (TensorRT's, OpenVINO's) have no GroupNormSiLU node and are left as they are.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {v.name for v in graph.output}
    replaced, drop = 0, set()
    for node in list(graph.node):
        if node.op_type != GROUP_NORM_SILU_OP or node.domain != ATTENTION_DOMAIN:
            continue
        dq = producer.get(node.input[0])
        after = consumers.get(node.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q = after[0]
        if node.output[0] in outputs or len(dq.input) < 3 or len(q.input) < 3:
            continue  # a zero point is needed to carry the 8-bit type
        fused = helper.make_node(
            QUANTIZED_GROUP_NORM_SILU_OP, [dq.input[0], dq.input[1], dq.input[2], node.input[1], node.input[2],
                                           q.input[1], q.input[2]],
            [q.output[0]], name=f"{node.name}_int8", domain=ATTENTION_DOMAIN)
        fused.attribute.extend(node.attribute)
        index = list(graph.node).index(node)
        graph.node.insert(index, fused)
        drop.update({id(node), id(q)})
        if len(consumers.get(dq.output[0], [])) == 1:
            drop.add(id(dq))
        replaced += 1
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    return replaced

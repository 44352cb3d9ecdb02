"""``--target onnxruntime``: the ONNX model (fp32, fp16 or int8 QDQ) run in ONNX Runtime on CPU."""

from __future__ import annotations

from ..pipeline import Report
from . import ExportRequest, finish_report, new_report, write_fp16_onnx, write_int8_onnx, write_onnx


def check_request(request: ExportRequest) -> None:
    if request.precision == "bf16":
        raise ValueError("precision: ONNX Runtime's CPU provider has no bfloat16 kernels for NAF's convolutions on "
                         "x86 (it would run them in float32 between conversions); --target openvino --bf16 runs "
                         "them in bfloat16")


def export(request: ExportRequest) -> Report:
    from ..runners.onnxruntime import OnnxRuntimeRunner

    report = new_report(request, "onnxruntime")
    path = fp32_path = write_onnx(request, report, "onnxruntime")
    if request.precision == "fp16":
        path = write_fp16_onnx(fp32_path, report)
    elif request.precision == "int8":
        path = write_int8_onnx(request, fp32_path, report, plugin=request.plugin)
    runner = OnnxRuntimeRunner(path, plugin=request.plugin, threads=request.threads,
                               lean_memory=request.lean_memory)
    return finish_report(report, runner, request)

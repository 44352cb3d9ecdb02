"""``--target onnxruntime``: the ONNX model (fp32, fp16 or int8 QDQ) run in ONNX Runtime on CPU."""

from __future__ import annotations

from ..pipeline import Report
from . import ExportRequest, finish_report, new_report, write_onnx


def export(request: ExportRequest) -> Report:
    from ..runners.onnxruntime import OnnxRuntimeRunner

    report = new_report(request, "onnxruntime")
    fp32_path = write_onnx(request)
    report.artifacts["onnx"] = str(fp32_path)
    path = fp32_path
    if request.precision == "fp16":
        from ..quantize import convert_fp16

        path = convert_fp16(fp32_path, fp32_path.with_name(fp32_path.stem + "_fp16.onnx"))
        report.artifacts["onnx_fp16"] = str(path)
    elif request.precision == "int8":
        from ..calibration import load_calibration_set
        from ..quantize import quantize_int8

        calibration = load_calibration_set(request.data, request.config)
        path = quantize_int8(fp32_path, fp32_path.with_name(fp32_path.stem + "_int8.onnx"), calibration,
                             plugin=request.plugin)
        report.artifacts["onnx_int8"] = str(path)
        report.notes.append(f"int8: static QDQ calibrated on {len(calibration)} images "
                            f"({request.data or 'bundled calibration set'})")
    runner = OnnxRuntimeRunner(path, plugin=request.plugin, threads=request.threads,
                               lean_memory=request.lean_memory)
    return finish_report(report, runner, request)

"""``--target onnx``: write the float32 ONNX model (fused or portable), run nothing."""

from __future__ import annotations

from ..pipeline import Report
from . import ExportRequest, new_report, write_onnx


def check_request(request: ExportRequest) -> None:
    if request.precision != "fp32":
        raise ValueError(
            f"precision: --target onnx writes the float32 model; for {request.precision} use "
            "--target onnxruntime (its artifact is a standard ONNX file too)"
        )


def export(request: ExportRequest) -> Report:
    check_request(request)
    report = new_report(request, "onnx")
    write_onnx(request, report, "onnx")
    return report

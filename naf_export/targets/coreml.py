"""``--target coreml``: a Core ML ML Program package (iOS 17 / macOS 14), built with coremltools'
MIL builder from the model's weights (:mod:`naf_export.coreml_export`), then run for parity: with
Core ML on macOS, elsewhere by evaluating the saved package's program op by op with numpy
(:mod:`naf_export.mil_eval`; not the Core ML runtime, so no latency is reported there).

Precisions: fp32; ``--fp16`` float16 compute throughout (:data:`FP16_FP32_SCOPES`); ``--int8`` the
same plus 8-bit linear symmetric per-channel convolution weights (weight-only: no calibration
data). Inputs and output are float32 in every case.
"""

from __future__ import annotations

from ..coreml_export import export_coreml
from ..pipeline import Report
from . import ExportRequest, encoder_ops_for, finish_report, new_report

__all__ = ["FP16_FP32_SCOPES", "check_request", "export"]

#: Ops kept in float32 under float16 compute: none. Measured with the MIL evaluator at the official
#: protocol (docs/BENCHMARKS.md), float32 GroupNorm statistics lower rel_l2 by 2-11% and raise
#: max_abs by 2-40%, and float32 ops would keep those parts off the Neural Engine. A float32 softmax
#: is indistinguishable there by construction (the evaluator runs a float16 softmax in float32 and
#: rounds its result), and so is a device's float16 accumulation of the GroupNorm statistics: both
#: unchecked; ``export_coreml(fp32_scopes=...)`` builds those variants.
FP16_FP32_SCOPES: tuple[str, ...] = ()


def check_request(request: ExportRequest) -> None:
    """Refuse the options a Core ML package cannot honour, before anything is written."""
    encoder_ops_for("coreml", request.attention, request.encoder_ops)  # refuses --encoder-ops fused
    if request.precision == "bf16":
        raise ValueError("precision: Core ML packages are float32, --fp16 or --int8 (weights); --bf16 is for "
                         "CPUs with bfloat16 arithmetic (--target openvino)")
    if request.int8_bound is not None:
        raise ValueError("max_rel_l2/min_cosine: Core ML's --int8 quantizes weights only, with no accuracy search "
                         "(--target onnxruntime or openvino)")
    if request.dynamic_batch:
        raise ValueError("dynamic_batch: --target coreml builds fixed shapes (batch 1); drop --dynamic-batch")
    if request.data is not None:
        raise ValueError("data: --target coreml --int8 quantizes the convolution weights alone (no calibration "
                         "data); drop --data")


def export(request: ExportRequest) -> Report:
    from ..runners.coreml import CoreMLRunner, import_coremltools

    check_request(request)
    import_coremltools()  # TargetUnavailable before anything is written: nothing can be built without it
    config = request.config
    report = new_report(request, "coreml")
    request.work.mkdir(parents=True, exist_ok=True)
    result = export_coreml(
        request.model, request.work / f"naf_{request.precision}.mlpackage", image_size=config.image_size,
        feature_size=config.feature_size, channels=config.channels, output_size=config.output_size,
        precision=request.precision, fp32_scopes=FP16_FP32_SCOPES,
    )
    report.artifacts["mlpackage"] = str(result.path)
    compute = {"fp32": "float32 compute",
               "fp16": "float16 compute",
               "int8": "8-bit linear symmetric per-channel convolution weights on float16 compute"}[request.precision]
    report.notes.append(f"coreml: ML Program for iOS 17 / macOS 14, {compute}, float32 inputs and output; "
                        f"{result.size_bytes / 1e6:.2f} MB, built and converted in {result.convert_seconds:.1f} s")
    runner = CoreMLRunner(result.path)
    if runner.backend == "mil":
        report.notes.append("parity: the saved package's MIL program evaluated op by op with numpy (MIL evaluation, "
                            "not the Core ML runtime: Core ML predicts only on macOS); latency not measured")
    return finish_report(report, runner, request, latency=runner.backend == "coreml")

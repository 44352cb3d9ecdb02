"""One module per ``--target``: each exposes ``export(request: ExportRequest) -> Report``.

The steps every target shares (writing the ONNX file, parity against PyTorch on the sample
inputs, latency) live here so that target modules only translate to their runtime.
"""

from __future__ import annotations

import copy
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import check_count, check_threads
from ..errors import TargetUnavailable
from ..int8_search import AccuracyBound
from ..model import NAF
from ..native import check_plugin
from ..onnx_export import ENCODER_OPS, export_onnx
from ..outdir import OutputDir
from ..pipeline import ExportConfig, Report, Runner, measure_latency, parity_against_pytorch, sample_inputs
from ..samples import SAMPLE_IMAGES
from ..sizing import check_memory, check_sizes

__all__ = [
    "PLUGIN_TARGETS", "PRECISIONS", "TARGETS", "ExportRequest", "TargetUnavailable", "finish_report", "new_report", "run_target",
    "encoder_ops_for", "write_fp16_onnx", "write_int8_onnx", "write_onnx",
]

#: Target name -> module under naf_export.targets.
TARGETS = {
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
    "coreml": "coreml",
}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


#: Targets that load a plugin library (--plugin); each loads the kind named like it
#: (naf_export.native.PLUGIN_ENTRY_POINTS).
PLUGIN_TARGETS = ("onnxruntime", "openvino", "tensorrt")


@dataclass
class ExportRequest:
    """Everything a target needs to build, run and report on an artifact. Every argument is checked
    here, before anything is written: sizes (against the model and this machine's memory), counts,
    paths.

    ``out`` is the folder the results end up in; ``work`` the folder the target writes into (the
    run's staging folder inside ``out``, set by :func:`run_target`; ``out`` when unset).
    """

    model: NAF
    config: ExportConfig
    out: Path
    attention: str = "fused"
    dynamic_batch: bool = False
    precision: str = "fp32"  # "fp32" | "fp16" | "bf16" | "int8"
    data: Path | None = None  # calibration directory for int8 (None: the bundled set)
    samples: int = 2  # bundled sample images used for parity
    runs: int = 10  # timed runs for latency
    threads: int = 0  # runtime threads (0: all cores)
    checkpoint: Path | None = None  # the file the model's weights came from (None: untrained stand-in)
    plugin: Path | None = None  # explicit plugin library (otherwise the one built with the package)
    lean_memory: bool = False  # trade some speed for a lower peak memory where the runtime allows
    batch_range: tuple[int, int, int] = (1, 1, 8)  # min/opt/max batch of a dynamic-batch engine
    encoder_ops: str | None = None  # "onnx" | "fused" (GroupNormSiLU, AxialRoPE nodes); None: the target's choice
    work: Path | None = None  # where the target writes (see the class doc)
    int8_bound: AccuracyBound | None = None  # accuracy-targeted INT8 (--max-rel-l2 / --min-cosine)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.attention not in ("fused", "portable"):
            raise ValueError(f"attention: expected 'fused' or 'portable', got {self.attention!r}")
        if len(self.batch_range) != 3 or not 1 <= self.batch_range[0] <= self.batch_range[1] <= self.batch_range[2]:
            raise ValueError(f"batch_range: expected MIN OPT MAX with 1 <= MIN <= OPT <= MAX, got {self.batch_range}")
        if self.encoder_ops is not None and self.encoder_ops not in ENCODER_OPS:
            raise ValueError(f"encoder_ops: expected one of {ENCODER_OPS}, got {self.encoder_ops!r}")
        if self.data is not None and self.precision != "int8":
            raise ValueError("data: a calibration directory is only used with --int8")
        if self.data is not None and not Path(self.data).is_dir():
            raise ValueError(f"data: {os.fspath(self.data)!r} is not a directory of images")
        if self.int8_bound is not None and self.precision != "int8":
            raise ValueError("max_rel_l2/min_cosine: an accuracy bound chooses what --int8 keeps in float; add --int8")
        check_count("samples", self.samples, 1, len(SAMPLE_IMAGES), " (bundled sample images used for parity)")
        check_count("runs", self.runs, 1, hint=" (timed runs)")
        check_threads(self.threads)
        check_sizes(self.config, num_heads=self.model.num_heads, kernel_size=self.model.kernel_size)
        check_memory(self.config, self.batch_range[2] if self.dynamic_batch else 1)
        self.out = Path(self.out)
        self.work = self.out if self.work is None else Path(self.work)


#: The image-encoder forms each target's runtime implements (``--encoder-ops``), its default for a
#: fused-attention model first: ``fused`` (naf::GroupNormSiLU and naf::AxialRoPE) in ONNX Runtime's
#: plugin, ``rope`` (naf::AxialRoPE alone) in ONNX Runtime's and OpenVINO's, ``onnx`` (standard
#: operators) everywhere. ``onnx`` writes plugin nodes only on request: its file is meant for any
#: runtime.
_ENCODER_OPS_BY_TARGET = {
    "onnxruntime": ("fused", "rope", "onnx"),
    "openvino": ("rope", "onnx"),
    "onnx": ("onnx", "rope", "fused"),
}


def encoder_ops_for(target: str, attention: str, requested: str | None = None) -> str:
    """The image-encoder form ``target`` exports: ``requested`` if given (``--encoder-ops``) and the
    target's runtime implements it, else its fastest form when the model is plugin-bound anyway
    (fused attention), else standard operators."""
    allowed = _ENCODER_OPS_BY_TARGET.get(target, ("onnx",))
    if requested is not None:
        if requested not in allowed:
            raise ValueError(f"encoder_ops: {requested!r} (plugin nodes) is not implemented for --target {target}; "
                             f"expected one of {allowed}")
        return requested
    return allowed[0] if attention == "fused" and target != "onnx" else "onnx"


def write_onnx(request: ExportRequest, report: Report, target: str) -> Path:
    """Write the float32 ONNX model of ``request`` as ``target`` runs it into ``request.work`` and
    record it in ``report`` as the ``onnx`` artifact."""
    config = request.config
    request.work.mkdir(parents=True, exist_ok=True)
    path = export_onnx(
        request.model, request.work / f"naf_{request.attention}.onnx",
        image_size=config.image_size, feature_size=config.feature_size, channels=config.channels,
        output_size=config.output_size, attention=request.attention, dynamic_batch=request.dynamic_batch,
        encoder_ops=encoder_ops_for(target, request.attention, request.encoder_ops),
    )
    report.artifacts["onnx"] = str(path)
    return path


def write_fp16_onnx(fp32_path: Path, report: Report) -> Path:
    """``<model>_fp16.onnx`` next to ``fp32_path`` (float16 inside, float32 inputs/outputs)."""
    from ..quantize import convert_fp16

    path = convert_fp16(fp32_path, fp32_path.with_name(fp32_path.stem + "_fp16.onnx"))
    report.artifacts["onnx_fp16"] = str(path)
    return path


def write_int8_onnx(request: ExportRequest, fp32_path: Path, report: Report,
                    plugin: str | os.PathLike[str] | None = None, runtime: str = "onnxruntime") -> Path:
    """``<model>_int8.onnx``: the QDQ model calibrated on ``request.data`` (or the bundled set), in
    the form ``runtime`` runs fastest (:func:`naf_export.quantize.quantize_int8`). ``plugin`` is the
    ONNX Runtime custom-op library calibration runs with (default: the package's)."""
    from ..calibration import load_calibration_set
    from ..quantize import quantize_int8

    calibration = load_calibration_set(request.data, request.config)
    dst = fp32_path.with_name(fp32_path.stem + "_int8.onnx")
    if request.int8_bound is None:
        path = quantize_int8(fp32_path, dst, calibration, plugin=plugin, runtime=runtime)
    else:
        path = _write_int8_to_bound(request, fp32_path, dst, calibration, plugin, report)
    report.artifacts["onnx_int8"] = str(path)
    report.notes.append(f"int8: static QDQ calibrated on {len(calibration)} images "
                        f"({request.data or 'bundled calibration set'})")
    return path


def held_out_references(request: ExportRequest):
    """The held-out images of an accuracy-targeted INT8 search (all the bundled sample images, which
    `naf-export validate` also uses by default, disjoint from the calibration set) and PyTorch
    float32's outputs on them."""
    import torch

    inputs = sample_inputs(request.config, len(SAMPLE_IMAGES))
    with torch.inference_mode():
        refs = [request.model(torch.from_numpy(i), torch.from_numpy(f), request.config.output_size).numpy()
                for i, f in inputs]
    return inputs, refs


def _write_int8_to_bound(request: ExportRequest, fp32_path: Path, dst: Path, calibration, plugin, report: Report) -> Path:
    """The ONNX Runtime INT8 model with the fewest convolutions in float for ``request.int8_bound``
    (naf_export.int8_search), and what that cost in speed, in ``report.quantization``."""
    from ..int8_search import search_float_layers
    from ..quantize import Int8Quantizer
    from ..runners.onnxruntime import OnnxRuntimeRunner

    inputs, refs = held_out_references(request)
    with Int8Quantizer(fp32_path, calibration, plugin=plugin) as quantizer:
        runners: dict[tuple[str, ...], Runner] = {}

        def build(float_layers):
            key = tuple(float_layers)
            if key not in runners:
                path = quantizer.write(request.work / ".int8_trial.onnx", float_layers)
                runners[key] = OnnxRuntimeRunner(path, plugin=plugin, threads=request.threads)
            return runners[key]

        result = search_float_layers(build, quantizer.convolutions, request.int8_bound, inputs, refs)
        path = quantizer.write(dst, result.float_layers)
        (request.work / ".int8_trial.onnx").unlink(missing_ok=True)
        all_int8 = measure_latency(build([]), *inputs[0], runs=request.runs)["median"]
        final = measure_latency(build(result.float_layers), *inputs[0], runs=request.runs)["median"]
    report.quantization = {**result.to_dict(), "latency_all_int8_ms": all_int8, "latency_ms": final}
    report.notes.append(f"int8: {request.int8_bound.describe()} on {len(inputs)} held-out images: "
                        + (f"{len(result.float_layers)} of {len(quantizer.convolutions)} convolutions kept in float "
                           f"({', '.join(result.float_layers)}), {final / all_int8:.2f}x the all-INT8 latency"
                           if result.float_layers else "met with every convolution in INT8"))
    return path


def new_report(request: ExportRequest, target: str) -> Report:
    report = Report(target=target, precision=request.precision, config=request.config)
    if request.checkpoint is not None:
        from ..release import file_sha256

        report.checkpoint = {"path": os.fspath(request.checkpoint), "sha256": file_sha256(request.checkpoint)}
    else:
        report.notes.append("untrained stand-in weights (no --checkpoint): parity is meaningful, features are not")
    return report


def finish_report(report: Report, runner: Runner, request: ExportRequest, *, latency: bool = True) -> Report:
    """Parity against PyTorch float32 on the sample inputs, and latency (unless ``latency`` is
    False: a runner that is not the target's runtime says nothing about its speed)."""
    inputs = sample_inputs(request.config, request.samples)
    report.parity = parity_against_pytorch(request.model, runner, inputs, request.config.output_size)
    if latency:
        report.latency_ms = measure_latency(runner, *inputs[0], runs=request.runs)
    return report


def run_target(target: str, request: ExportRequest) -> Report:
    """Build, run and report ``target`` for ``request``, atomically: the target writes into a
    staging folder inside ``request.out``, whose files move into place, report.json last, only when
    it succeeds (or stops with TargetUnavailable after building what it could). Any other failure
    leaves ``request.out`` as it was. A second run into the same folder meanwhile fails at once."""
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {tuple(TARGETS)}, got {target!r}")
    if request.plugin is not None:
        if target not in PLUGIN_TARGETS:
            reason = "runs nothing, so it loads" if target == "onnx" else "loads"
            raise ValueError(f"plugin: --target {target} {reason} no plugin library (only --target "
                             f"{', '.join(PLUGIN_TARGETS)} do)")
        request.plugin = check_plugin(request.plugin, target)
    module = importlib.import_module(f".{TARGETS[target]}", __name__)
    if hasattr(module, "check_request"):  # target-specific arguments, refused before anything is written
        module.check_request(request)
    with OutputDir(request.out) as out:
        staged = copy.copy(request)
        staged.work = out.staging
        try:
            report = module.export(staged)
        except TargetUnavailable as exc:
            if exc.report is None:
                raise
            _publish(out, exc.report)
            raise TargetUnavailable(out.relocate(str(exc)), exc.report) from exc
        _publish(out, report)
    return report


def _publish(out: OutputDir, report: Report) -> None:
    report.relocate(out.relocate)
    report.write(out.staging)
    out.commit()

"""``--target openvino``: OpenVINO IR (fp32, fp16 compressed weights, or int8 from NNCF) compiled
and run on CPU with the naf-export extension library.

The float32 ONNX file is read by OpenVINO's ONNX frontend with ``libnaf_openvino.so`` loaded (its
``naf`` domain mapping turns the fused node into the extension operation), then saved as IR
(``.xml`` + ``.bin``). Compiled models are cached under ``<out>/openvino_cache``, keyed by the
model's content, so a second run on the same model imports the compiled blob instead of compiling.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..contract import ATTENTION_OP, INPUT_NAMES, STAGES_KEY
from ..runners.openvino import IR_PRECISION_KEY, STAGES_RT_KEY
from ..pipeline import Report
from ..errors import CheckFailed
from . import ExportRequest, TargetUnavailable, finish_report, new_report, write_onnx

__all__ = ["INT8_OP_TYPES", "PRECISIONS", "check_bf16_support", "check_request", "convert_ir", "export",
           "fuse_group_norm", "quantize_int8"]

#: OpenVINO operation types NNCF gives INT8 inputs: the convolutions hold almost all of NAF's
#: arithmetic. Everything else (GroupNorm statistics, RoPE, pooling, the attention and its
#: softmax) stays in float, where INT8 would cost accuracy for no speed.
INT8_OP_TYPES = ("Convolution",)
#: The compiled-model cache inside the output folder (content-keyed: an unchanged model hits).
CACHE_DIR = "openvino_cache"
OPENVINO_REQUIREMENT = "openvino==2026.4.1"
#: IR precisions: fp16 stores the weights in float16 (float32 math), bf16 runs in bfloat16.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def _import_openvino():
    try:
        import openvino as ov
    except ImportError as exc:
        raise TargetUnavailable(f"the openvino Python package is not installed ({exc}); pip install {OPENVINO_REQUIREMENT}") from exc
    return ov


def _core(model_path: Path, plugin: Path | None):
    """An ov.Core with the extension loaded when ``model_path`` needs it."""
    from ..runners.openvino import add_extension

    core = _import_openvino().Core()
    add_extension(core, model_path, plugin)
    return core


def _constant(output) -> np.ndarray | None:
    node = output.get_node()
    return node.get_data() if node.get_type_name() == "Constant" else None


def _only_consumer(node, type_name: str):
    targets = list(node.output(0).get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != type_name:
        return None
    return targets[0].get_node()


def _with_constant(node, expected_shape: tuple[int, ...] | None = None):
    """(other input, constant data) of a binary node with one Constant input, else None."""
    for i in (0, 1):
        data = _constant(node.input_value(i))
        if data is not None and (expected_shape is None or data.size == int(np.prod(expected_shape))):
            return node.input_value(1 - i), data
    return None


def _mean_input(output, axes: set[int]):
    """The tensor that a chain of keep-dims ReduceMean nodes, together over ``axes``, starts from."""
    seen: set[int] = set()
    while output.get_node().get_type_name() == "ReduceMean":
        node = output.get_node()
        data = _constant(node.input_value(1))
        if data is None or not node.get_attributes().get("keep_dims", False):
            return None
        seen.update(int(a) for a in np.atleast_1d(data))
        output = node.input_value(0)
    return output if seen == axes else None


def fuse_group_norm(model) -> int:
    """Replace each GroupNorm the ONNX export spells out (reshape to (B, G, C/G, H, W), chained
    ReduceMean for mean and variance, Sqrt/Div, reshape back, per-channel scale and shift) by
    OpenVINO's GroupNormalization operation; return how many were replaced.

    Same math, but the CPU plugin then runs one fused normalisation kernel instead of a dozen
    full-resolution element-wise passes and layout reorders (about 1.2x at ratio 16 in float32,
    2x in INT8), and with float32 error below the spelled-out form's. Subgraphs that do not
    match exactly are left alone.
    """
    import openvino.opset12 as ops12

    fused = 0
    for div in model.get_ordered_ops():
        if div.get_type_name() != "Divide":
            continue
        sub, sqrt = div.input_value(0).get_node(), div.input_value(1).get_node()
        if sub.get_type_name() != "Subtract" or sqrt.get_type_name() != "Sqrt":
            continue
        grouped = sub.input_value(0)  # (B, G, C/G, H, W)
        reshape_in = grouped.get_node()
        if reshape_in.get_type_name() != "Reshape" or _mean_input(sub.input_value(1), {2, 3, 4}) != grouped:
            continue
        add_eps = sqrt.input_value(0).get_node()
        if add_eps.get_type_name() != "Add" or (found := _with_constant(add_eps, ())) is None:
            continue
        variance, eps = found
        square = _mean_input(variance, {2, 3, 4})
        if square is None or square.get_node().get_type_name() != "Multiply":
            continue
        if any(square.get_node().input_value(i) != sub.output(0) for i in (0, 1)):
            continue
        x = reshape_in.input_value(0)  # (B, C, H, W)
        shape = x.get_partial_shape()
        grouped_shape = grouped.get_partial_shape()
        if shape.rank.get_length() != 4 or grouped_shape.rank.get_length() != 5 or shape[1].is_dynamic:
            continue
        channels, groups = shape[1].get_length(), grouped_shape[1].get_length()
        reshape_out = _only_consumer(div, "Reshape")
        scale = _only_consumer(reshape_out, "Multiply") if reshape_out is not None else None
        shift = _only_consumer(scale, "Add") if scale is not None else None
        if shift is None or reshape_out.get_output_partial_shape(0) != shape:
            continue
        gamma, beta = _with_constant(scale, (channels,)), _with_constant(shift, (channels,))
        if gamma is None or beta is None or gamma[0] != reshape_out.output(0) or beta[0] != scale.output(0):
            continue
        norm = ops12.group_normalization(
            x, ops12.constant(gamma[1].reshape(channels).astype(np.float32)),
            ops12.constant(beta[1].reshape(channels).astype(np.float32)), groups, float(np.float32(eps.reshape(()))),
        )
        norm.set_friendly_name(shift.get_friendly_name())
        shift.output(0).replace(norm.output(0))
        fused += 1
    if fused:
        model.validate_nodes_and_infer_types()
    return fused


def _name_unnamed_nodes(model) -> None:
    """Give every node that has no friendly name (OpenVINO then shows a process-wide counter,
    "Constant_922") a name from its position in the graph, so that converting the same model
    twice, even in one process, writes byte-identical IR and the model cache keeps hitting."""
    for index, node in enumerate(model.get_ordered_ops()):
        if node.get_friendly_name() == node.get_name():
            node.set_friendly_name(f"{node.get_type_name()}.{index}")


def _nncf_dataset(pairs):
    import nncf

    return nncf.Dataset(list(pairs), lambda item: {name: np.ascontiguousarray(a, dtype=np.float32)
                                                   for name, a in zip(INPUT_NAMES, item[:2])})


@contextlib.contextmanager
def _quiet_nncf(progress: bool):
    """NNCF logs one INFO line per operation it leaves in float (here: everything but the convs);
    its progress bars go to stdout."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING if progress else logging.ERROR)
    try:
        with contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)


def _bound_margin(bound, compiled, items) -> tuple[float, list[float]]:
    """How far ``compiled`` is inside ``bound`` on the held-out ``items`` (image, features, reference):
    the smallest margin over images and criteria (>= 0: met), and each image's."""
    from ..metrics import parity

    margins = []
    for image, feats, reference in items:
        result = parity(np.asarray(compiled([image, feats])[0]), reference)
        terms = [bound.max_rel_l2 - result["rel_l2"]] if bound.max_rel_l2 is not None else []
        terms += [result["cosine_min"] - bound.min_cosine] if bound.min_cosine is not None else []
        margins.append(min(terms))
    return min(margins), margins


def float_convolutions(model) -> list[str]:
    """The Convolution operations of an NNCF-quantized ``ov.Model`` whose activation input is not
    fake-quantized (they run in float)."""
    def quantized(node) -> bool:
        source = node.input_value(0).get_node()
        while source.get_type_name() in ("Convert", "Pad", "Reshape"):
            source = source.input_value(0).get_node()
        return source.get_type_name() == "FakeQuantize"

    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in INT8_OP_TYPES and not quantized(op)]


def quantize_int8(
    model,
    calibration: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    progress: bool = True,
    bound=None,
    held_out=None,
):
    """Post-training INT8 quantization of an ``ov.Model`` with NNCF, calibrated on ``calibration``.

    Only the inputs of :data:`INT8_OP_TYPES` are quantized (weights per output channel, activations
    per tensor); every other operation, the naf extension operations included, is in NNCF's
    ignored scope, so it stays float. NNCF's graph builder treats the extension operations as
    unknown and runs them for statistics through the model object, which already holds their nodes.

    With an accuracy ``bound`` (naf_export.int8_search.AccuracyBound) and ``held_out`` images with
    PyTorch's outputs (``[(image, features, reference), ...]``), NNCF's accuracy-control quantization
    returns the most sensitive convolutions to float until the bound holds on them (the allowed drop
    is the float model's own margin to the bound, so a quantized model that NNCF accepts meets it).
    """
    import nncf

    if len(calibration) == 0:
        raise ValueError("calibration: expected at least one (image, features) pair")
    ignored = sorted(op.get_friendly_name() for op in model.get_ops() if op.get_type_name() not in INT8_OP_TYPES)
    common = dict(subset_size=len(calibration), fast_bias_correction=True,
                  ignored_scope=nncf.IgnoredScope(names=ignored, types=[ATTENTION_OP], validate=False))
    with _quiet_nncf(progress):
        if bound is None:
            return nncf.quantize(model, _nncf_dataset(calibration), **common)
        float_margin, _ = _bound_margin(bound, _import_openvino().Core().compile_model(model, "CPU"), held_out)
        if float_margin < 0:
            raise ValueError(f"max_rel_l2/min_cosine: {bound.describe()} is missed by the float model itself on the "
                             "held-out images; loosen the bound")
        return nncf.quantize_with_accuracy_control(
            model, _nncf_dataset(calibration), _nncf_dataset(held_out),
            lambda compiled, items: _bound_margin(bound, compiled, items), max_drop=float_margin,
            drop_type=nncf.DropType.ABSOLUTE, **common)


def convert_ir(
    onnx_path: Path,
    xml_path: Path,
    *,
    precision: str = "fp32",
    plugin: Path | None = None,
    calibration: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    progress: bool = True,
) -> Path:
    """Read ``onnx_path`` with OpenVINO and save IR ``xml_path`` (+ ``.bin``) at ``precision``:
    fp32, fp16 (weights stored as float16, decompressed at compile time) or int8 (NNCF on
    ``calibration``). GroupNorm subgraphs become OpenVINO GroupNormalization (:func:`fuse_group_norm`)."""
    return _convert(onnx_path, xml_path, precision, plugin, calibration, progress)[0]


def _convert(onnx_path, xml_path, precision, plugin, calibration, progress, bound=None,
             held_out=None) -> tuple[Path, int]:
    ov = _import_openvino()
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ValueError("calibration: int8 needs (image, features) pairs")
    core = _core(onnx_path, plugin)
    try:
        model = core.read_model(os.fspath(onnx_path))
    except Exception as exc:
        raise ValueError(f"model: OpenVINO cannot read {str(onnx_path)!r}: {exc}") from exc
    fused = fuse_group_norm(model)
    _name_unnamed_nodes(model)
    if precision == "int8":
        model = quantize_int8(model, calibration, progress=progress, bound=bound, held_out=held_out)
        _name_unnamed_nodes(model)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model.set_rt_info(precision, list(IR_PRECISION_KEY))  # the runner's inference precision follows it
    import onnx

    stages = {p.key: p.value for p in onnx.load(os.fspath(onnx_path), load_external_data=False).metadata_props}
    if STAGES_KEY in stages:  # validate --stages finds the tensors by these names
        model.set_rt_info(stages[STAGES_KEY], list(STAGES_RT_KEY))
    ov.save_model(model, os.fspath(xml_path), compress_to_fp16=precision == "fp16")
    return xml_path, fused


def _report_bound_search(request: ExportRequest, report: Report, onnx_path: Path, xml_path: Path, calibration,
                         held_out) -> None:
    """What the accuracy-targeted quantization kept in float and what that cost, against the
    all-INT8 model (quantized once more for the comparison), in ``report.quantization``."""
    from ..int8_search import held_out_error
    from ..pipeline import measure_latency
    from ..runners.openvino import OpenVinoRunner

    all_int8_xml = request.work / ".int8_all.xml"
    try:
        _convert(onnx_path, all_int8_xml, "int8", request.plugin, calibration, False)
        runners = {"all": OpenVinoRunner(all_int8_xml, extension=request.plugin, threads=request.threads),
                   "final": OpenVinoRunner(xml_path, extension=request.plugin, threads=request.threads)}
        inputs, refs = [item[:2] for item in held_out], [item[2] for item in held_out]
        errors = {k: held_out_error(r, inputs, refs) for k, r in runners.items()}
        latency = {k: measure_latency(r, *inputs[0], runs=request.runs)["median"] for k, r in runners.items()}
        kept = float_convolutions(runners["final"].core.read_model(os.fspath(xml_path)))
        total = len([op for op in runners["final"].core.read_model(os.fspath(xml_path)).get_ops()
                     if op.get_type_name() in INT8_OP_TYPES])
    finally:
        for path in (all_int8_xml, all_int8_xml.with_suffix(".bin")):
            path.unlink(missing_ok=True)
    bound = request.int8_bound
    if not bound.met(errors["final"]):
        raise CheckFailed(f"max_rel_l2/min_cosine: NNCF's accuracy control returned a model that misses "
                          f"{bound.describe()} on the held-out images (rel_l2 {errors['final']['rel_l2']:.3g}, "
                          f"cosine_min {errors['final']['cosine_min']:.6f})")
    report.quantization = {"bound": bound.describe(), "engine": "nncf.quantize_with_accuracy_control",
                           "float_layers": kept, "all_int8_error": errors["all"], "final_error": errors["final"],
                           "latency_all_int8_ms": latency["all"], "latency_ms": latency["final"]}
    report.notes.append(f"int8: {bound.describe()} on {len(inputs)} held-out images: "
                        + (f"{len(kept)} of {total} convolutions kept in float ({', '.join(kept)}), "
                           f"{latency['final'] / latency['all']:.2f}x the all-INT8 latency" if kept
                           else "met with every convolution in INT8"))


def check_bf16_support(core=None) -> None:
    """ValueError unless this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX), as OpenVINO reports it."""
    core = core or _import_openvino().Core()
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" not in capabilities:
        raise ValueError(f"precision: --bf16 needs a CPU with bfloat16 arithmetic (AVX512-BF16 or AMX); OpenVINO "
                         f"reports this CPU's capabilities as {capabilities}: use the float32 or --int8 model")


def check_request(request: ExportRequest) -> None:
    if request.precision == "bf16":
        check_bf16_support()


def _seed_cache(previous: Path, staged: Path) -> None:
    """Link the compiled-model cache of earlier runs (``previous``) into this run's staging folder:
    a cache hit reads from it, and the blobs this run adds join ``previous`` only when it succeeds.
    OpenVINO never rewrites an existing blob, so the links cannot alter the earlier files."""
    staged.mkdir(parents=True, exist_ok=True)
    if not previous.is_dir() or previous.resolve() == staged.resolve():
        return
    for blob in previous.iterdir():
        if blob.is_file():
            try:
                os.link(blob, staged / blob.name)
            except OSError:  # a file system without hard links
                shutil.copyfile(blob, staged / blob.name)


def export(request: ExportRequest) -> Report:
    report = new_report(request, "openvino")
    onnx_path = write_onnx(request, report, "openvino")
    _import_openvino()  # after the ONNX file, as TargetUnavailable promises
    from ..runners.openvino import OpenVinoRunner

    xml_path = request.work / f"{onnx_path.stem}_openvino_{request.precision}.xml"
    calibration = None
    if request.precision == "int8":
        from ..calibration import load_calibration_set

        calibration = load_calibration_set(request.data, request.config)
    held_out = None
    if request.int8_bound is not None:
        from . import held_out_references

        inputs, refs = held_out_references(request)
        held_out = [(image, feats, ref) for (image, feats), ref in zip(inputs, refs)]
    start = time.perf_counter()
    _, fused = _convert(onnx_path, xml_path, request.precision, request.plugin, calibration, True,
                        request.int8_bound, held_out)
    convert_s = time.perf_counter() - start
    if request.int8_bound is not None:
        _report_bound_search(request, report, onnx_path, xml_path, calibration, held_out)
    report.artifacts["openvino_xml"] = str(xml_path)
    report.artifacts["openvino_bin"] = str(xml_path.with_suffix(".bin"))
    report.notes.append(f"{fused} GroupNorm subgraphs written as OpenVINO GroupNormalization")
    if request.precision == "fp16":
        report.notes.append("fp16: weights stored as float16 in the IR, inference in float32 (INFERENCE_PRECISION_HINT=f32)")
    elif request.precision == "bf16":
        report.notes.append("bf16: float32 IR run in bfloat16 (INFERENCE_PRECISION_HINT=bf16, recorded in the IR's "
                            "rt_info); the attention and RoPE plugin operations compute in float32")
    elif request.precision == "int8":
        report.notes.append(f"int8: NNCF post-training quantization of the convolutions on {len(calibration)} images "
                            f"({request.data or 'bundled calibration set'}); GroupNorm, RoPE and attention in float")

    cache_dir = request.work / CACHE_DIR
    _seed_cache(request.out / CACHE_DIR, cache_dir)
    # The runner's "auto" precision hint: float32 math for fp32/fp16 IRs (the CPU default is bf16
    # on AMX/AVX512-BF16 parts), bf16 for bf16 ones; the device default for INT8 ones, where bf16
    # float parts are what makes INT8 pay off on such CPUs.
    runner = OpenVinoRunner(xml_path, extension=request.plugin, threads=request.threads, cache_dir=cache_dir)
    report.artifacts["openvino_cache"] = str(cache_dir)
    report.notes.append(
        f"openvino {runner.compiled.get_property('INFERENCE_PRECISION_HINT').to_string()} inference: IR written in {convert_s:.1f} s, "
        + (f"compiled model loaded from cache in {runner.compile_seconds:.2f} s" if runner.loaded_from_cache
           else f"compiled in {runner.compile_seconds:.2f} s (cached for the next run)")
    )
    if runner.extension is not None:
        report.artifacts["openvino_extension"] = str(runner.extension)
    return finish_report(report, runner, request)

"""``--target tensorrt``: a TensorRT 10 engine of the fused model with the naf-export plugin.

Steps: write the float32 ONNX (for ``--int8`` also the QDQ model calibrated on ``--data``); copy
the plugin's sources to ``OUT/plugin_src`` (so the plugin can be built where TensorRT runs, e.g.
on a Jetson); then, where TensorRT is importable, load ``libnaf_tensorrt.so``, build
``OUT/naf_<precision>.engine`` (timing cache ``OUT/tensorrt_timing.cache``), run it and report
parity and latency. Without TensorRT (or without a CUDA GPU) it writes ``report.json`` with the
artifacts built so far and raises TargetUnavailable saying what to install and how to build the
plugin from ``OUT/plugin_src``.

The plugin library: ``--plugin``, else ``$NAF_EXPORT_TRT_PLUGIN``, else
``OUT/plugin_build/lib/libnaf_tensorrt.so`` (where ``OUT/plugin_src/README.md`` builds it), else
the package's own build. ``--batch-range MIN OPT MAX`` sets the optimisation profile of a
``--dynamic-batch`` engine (default 1 1 8).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from ..pipeline import Report
from . import ExportRequest, TargetUnavailable, finish_report, new_report, write_fp16_onnx, write_int8_onnx, write_onnx

__all__ = ["PLUGIN_BUILD_DIR", "PLUGIN_SRC_DIR", "TIMING_CACHE", "check_request", "copy_plugin_sources", "export",
           "plugin_sources"]

PLUGIN_SRC_DIR = "plugin_src"
PLUGIN_BUILD_DIR = "plugin_build"
TIMING_CACHE = "tensorrt_timing.cache"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_REPO_DIR = _PACKAGE_DIR.parent
_MANIFEST = Path("plugins/tensorrt/plugin_src.manifest")


def _read_manifest(repo: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for line in (repo / _MANIFEST).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        pairs.append((repo / fields[0], Path(fields[1] if len(fields) > 1 else fields[0])))
    return pairs


def plugin_sources() -> list[tuple[Path, Path]]:
    """(source file, path inside plugin_src) for every file of the plugin's standalone build.

    An installed package carries them in ``naf_export/plugin_src`` (installed by CMake from
    ``plugins/tensorrt/plugin_src.manifest``); a repository checkout lists them in that manifest.
    Raises FileNotFoundError when neither is there.
    """
    installed = _PACKAGE_DIR / PLUGIN_SRC_DIR
    if (installed / "CMakeLists.txt").is_file():
        return sorted((p, p.relative_to(installed)) for p in installed.rglob("*") if p.is_file())
    if (_REPO_DIR / _MANIFEST).is_file():
        pairs = _read_manifest(_REPO_DIR)
        missing = [str(src) for src, _ in pairs if not src.is_file()]
        if missing:
            raise FileNotFoundError(f"plugin sources listed in {_MANIFEST} are missing: {', '.join(missing)}")
        return pairs
    raise FileNotFoundError(
        f"the TensorRT plugin sources are neither installed ({installed}) nor in a repository checkout "
        f"({_REPO_DIR / _MANIFEST}); reinstall naf-export"
    )


def copy_plugin_sources(dest: str | Path) -> Path:
    """Copy the plugin's standalone CMake project into ``dest`` (files are overwritten, other
    files in ``dest``, e.g. a build folder, are left alone); return ``dest``."""
    dest = Path(dest)
    for src, rel in plugin_sources():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return dest


def _build_instructions(request: ExportRequest, onnx_path: Path) -> str:
    """How to finish by hand: build the plugin from OUT/plugin_src, then the engine."""
    src = request.out / PLUGIN_SRC_DIR
    build = request.out / PLUGIN_BUILD_DIR
    engine = request.out / f"naf_{request.precision}.engine"
    # TensorRT 10 trtexec flags; TensorRT 11 drops --fp16 (build from the _fp16.onnx model written
    # by convert_fp16 instead) and types every network strongly.
    flag = {"fp32": " --noTF32", "fp16": " --fp16", "int8": " --stronglyTyped"}[request.precision]
    if request.dynamic_batch:  # without shapes trtexec pins every dynamic dimension to 1
        c = request.config
        dims = {"image": (3, *c.image_size), "features": (c.channels, *c.feature_size)}
        for key, batch in zip(("min", "opt", "max"), request.batch_range):
            flag += f" --{key}Shapes=" + ",".join(
                f"{name}:{'x'.join(str(d) for d in (batch, *shape))}" for name, shape in dims.items())
    if request.attention != "fused":
        return (f"The plugin-free ONNX model is written ({onnx_path}); build the engine where TensorRT is "
                f"installed: `trtexec --onnx={onnx_path}{flag} --saveEngine={engine}`.")
    return (
        f"The ONNX model ({onnx_path}) and the plugin sources ({src}) are written. Build the plugin where "
        f"TensorRT is installed: `cmake -S {src} -B {build} -DTensorRT_ROOT=<TensorRT prefix> && "
        f"cmake --build {build} --target naf_tensorrt` (on a Jetson: -DNAF_CUDA_ARCHITECTURES=87 instead of "
        f"TensorRT_ROOT; see {src / 'README.md'}), then re-run this command (it finds "
        f"{build / 'lib' / 'libnaf_tensorrt.so'}), or build the engine with `trtexec --onnx={onnx_path} "
        f"--dynamicPlugins={build / 'lib' / 'libnaf_tensorrt.so'}{flag} --saveEngine={engine}`."
    )


def check_request(request: ExportRequest) -> None:
    if request.precision == "bf16":
        raise ValueError("precision: the TensorRT target builds float32, --fp16 or --int8 engines (the plugin "
                         "computes in float32 or float16); --bf16 is for CPUs (--target openvino)")
    if request.int8_bound is not None:
        raise ValueError("max_rel_l2/min_cosine: the accuracy-targeted INT8 search measures each candidate where it "
                         "runs; for TensorRT it needs a GPU in the loop, which this target does not drive yet "
                         "(--target onnxruntime or openvino)")


def export(request: ExportRequest) -> Report:
    from ..runners import tensorrt as rt

    report = new_report(request, "tensorrt")
    onnx_path = fp32_path = write_onnx(request, report, "tensorrt")
    if request.precision == "int8":
        # request.plugin names the TensorRT library here; calibration runs in ONNX Runtime with
        # the package's own custom-op library.
        onnx_path = write_int8_onnx(request, fp32_path, report, runtime="tensorrt")
        report.notes.append("int8: the explicit Q/DQ model, built as a strongly typed TensorRT network")
    if request.attention == "fused":
        report.artifacts["plugin_src"] = str(copy_plugin_sources(request.work / PLUGIN_SRC_DIR))

    try:
        trt = rt.import_tensorrt()
    except TargetUnavailable as exc:
        message = f"{exc}. {_build_instructions(request, onnx_path)}"
        report.notes.append(f"TensorRT not available here: {message}")
        raise TargetUnavailable(message, report) from exc  # the artifacts so far are published

    engine_path = rt.engine_path_for(request.work, request.precision)
    timing_cache = request.work / TIMING_CACHE
    if (request.out / TIMING_CACHE).is_file():  # the persistent cache, updated only if this run succeeds
        shutil.copyfile(request.out / TIMING_CACHE, timing_cache)
    options = rt.BuildOptions(precision=request.precision, batch=request.batch_range, timing_cache=timing_cache)
    if request.precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
        # TensorRT without weak typing (11.x): the model's own types must say float16.
        onnx_path = write_fp16_onnx(fp32_path, report)
        options = dataclasses.replace(options, strongly_typed=True)
    try:
        info = rt.build_engine(onnx_path, engine_path, options=options, plugin=request.plugin,
                               plugin_search_dirs=(request.out / PLUGIN_BUILD_DIR,))
    except TargetUnavailable as exc:  # e.g. no CUDA GPU: keep what is built
        report.notes.append(f"engine not built: {exc}")
        raise TargetUnavailable(str(exc), report) from exc
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} {_build_instructions(request, onnx_path)}") from exc
    report.artifacts["engine"] = str(engine_path)
    report.artifacts["engine_info"] = str(engine_path) + ".json"
    report.artifacts["timing_cache"] = str(options.timing_cache)
    if info.get("plugin"):
        report.artifacts["tensorrt_plugin"] = info["plugin"]
    flags = ", ".join(info["flags"]) or "defaults"
    profile = f", batch profile {info['batch_profile']}" if info.get("batch_profile") else ""
    report.notes.append(f"TensorRT {trt.__version__} on {info.get('device') or 'the default GPU'}: "
                        f"flags {flags}{profile}, built in {info['build_seconds']:.1f} s")
    if info.get("timing_cache_note"):
        report.notes.append(info["timing_cache_note"])

    try:
        runner = rt.TensorRtRunner(engine_path, plugin=info.get("plugin"))
    except TargetUnavailable as exc:
        report.notes.append(f"engine built but not run here: {exc}")
        raise TargetUnavailable(str(exc), report) from exc
    report.notes.append("latency includes host-to-device and device-to-host copies")
    return finish_report(report, runner, request)

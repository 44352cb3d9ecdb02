"""``naf-export --target tensorrt``: the TensorRT engine builder and runner, and the plugin
sources it hands out.

Two groups:

* always run: without TensorRT the target writes the ONNX model, ``report.json`` and
  ``plugin_src`` and exits with status 3 naming what to install and the trtexec command;
  ``plugin_src`` builds as a standalone CMake project for sm_87 (Jetson Orin): the real
  ``libnaf_tensorrt.so`` linked against a link-only libnvinfer stub, exporting only TensorRT's
  entry points (needs nvcc and the kernel-lens TensorRT headers, like
  tests/test_native_cuda_compile.py); the pip install rules ship the same files.
* needs TensorRT >= 10, a CUDA build of PyTorch, a GPU and a built libnaf_tensorrt.so: engines
  built from the exported model and compared with PyTorch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest

from naf_export.cli import main
from naf_export.contract import ATTENTION_OP
from naf_export.targets import tensorrt as trt_target
from native_build import REPO, cxx_compiler, library, nvcc, run_checked, tensorrt_headers

SMALL = ["--image-size", "64", "64", "--feature-size", "9", "9", "--channels", "8", "--output-size", "18", "18"]


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import tensorrt`` fails, whether or not it is installed here."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.delenv("NAF_EXPORT_TRT_PLUGIN", raising=False)


def _manifest_targets() -> set[str]:
    return {str(rel) for _, rel in trt_target.plugin_sources()}


# ---- without TensorRT --------------------------------------------------------------------------


def test_without_tensorrt_writes_artifacts_and_exits_3(tmp_path: Path, no_tensorrt, capsys) -> None:
    out = tmp_path / "out"
    assert main(["--target", "tensorrt", *SMALL, "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "not available here: the TensorRT Python module" in err
    for needle in ("pip install tensorrt", "python3-libnvinfer", f"-S {out / 'plugin_src'}", "--dynamicPlugins="):
        assert needle in err, err

    onnx_path = out / "naf_fused.onnx"
    model = onnx.load(onnx_path)
    assert [n.domain for n in model.graph.node if n.op_type == ATTENTION_OP] == ["naf"]
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "tensorrt" and report["parity"] is None
    assert report["artifacts"] == {"onnx": str(onnx_path), "plugin_src": str(out / "plugin_src")}
    assert any("pip install tensorrt" in note for note in report["notes"])

    src = out / "plugin_src"
    written = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    assert written == _manifest_targets()
    for name in ("CMakeLists.txt", "README.md", "cmake/toolchains/aarch64-jetson.cmake",
                 "plugins/core/src/cross_scale_attention.cu", "plugins/tensorrt/src/plugin_registration.cpp"):
        assert name in written
    assert (src / "plugins/tensorrt/src/plugin_registration.cpp").read_bytes() == \
        (REPO / "plugins/tensorrt/src/plugin_registration.cpp").read_bytes()


def test_portable_without_tensorrt_needs_no_plugin(tmp_path: Path, no_tensorrt, capsys) -> None:
    out = tmp_path / "out"
    assert main(["--target", "tensorrt", "--attention", "portable", "--fp16", *SMALL, "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "trtexec --onnx=" in err and "--fp16" in err and "dynamicPlugins" not in err
    assert not (out / "plugin_src").exists()
    assert json.loads((out / "report.json").read_text())["artifacts"] == {"onnx": str(out / "naf_portable.onnx")}


def test_dynamic_batch_hint_gives_trtexec_the_profile(tmp_path: Path, no_tensorrt, capsys) -> None:
    out = tmp_path / "out"
    argv = ["--target", "tensorrt", *SMALL, "--dynamic-batch", "--batch-range", "1", "2", "4", "--out", str(out)]
    assert main(argv) == 3
    err = capsys.readouterr().err
    for needle in ("--minShapes=image:1x3x64x64,features:1x8x9x9", "--optShapes=image:2x3x64x64,features:2x8x9x9",
                   "--maxShapes=image:4x3x64x64,features:4x8x9x9"):
        assert needle in err, err


def test_float16_detection_guards_strongly_typed_fp16(tmp_path: Path, no_tensorrt) -> None:
    from naf_export.quantize import convert_fp16
    from naf_export.runners.tensorrt import _has_float16_tensors

    out = tmp_path / "out"
    assert main(["--target", "tensorrt", "--attention", "portable", *SMALL, "--out", str(out)]) == 3
    fp32 = out / "naf_portable.onnx"
    assert not _has_float16_tensors(fp32)
    assert _has_float16_tensors(convert_fp16(fp32, tmp_path / "fp16.onnx"))


def test_errors_since_counts_past_the_kept_window() -> None:
    from naf_export.runners.tensorrt import _errors_since

    log = types.SimpleNamespace(messages=[], error_count=0)

    def error(msg: str) -> None:  # what the TensorRT logger does with an ERROR
        log.error_count += 1
        log.messages.append(msg)
        del log.messages[:-50]

    for i in range(120):
        error(f"old {i}")
    mark = log.error_count
    assert _errors_since(log, mark) == "no error message from TensorRT"
    error("parser: bad node")
    assert _errors_since(log, mark) == "parser: bad node"
    for i in range(7):
        error(f"new {i}")
    assert _errors_since(log, mark) == "; ".join(f"new {i}" for i in range(2, 7))


def test_int8_without_tensorrt_writes_the_qdq_model(tmp_path: Path, no_tensorrt, capsys) -> None:
    library("naf_onnxruntime")  # calibration runs the fused model in ONNX Runtime
    out = tmp_path / "out"
    assert main(["--target", "tensorrt", "--int8", *SMALL, "--out", str(out)]) == 3
    assert "--stronglyTyped" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    qdq = onnx.load(report["artifacts"]["onnx_int8"])
    ops = {n.op_type for n in qdq.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", ATTENTION_OP} <= ops
    # TensorRT dequantizes 8-bit tensors only: the quantizer keeps biases in float.
    inits = {i.name: i.data_type for i in qdq.graph.initializer}
    assert all(inits.get(n.input[0]) != onnx.TensorProto.INT32 for n in qdq.graph.node if n.op_type == "DequantizeLinear")


def test_modules_import_without_tensorrt() -> None:
    code = ("import sys; import naf_export.targets.tensorrt, naf_export.runners.tensorrt; "
            "assert 'tensorrt' not in sys.modules, 'tensorrt imported at module import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---- plugin_src as a CMake project -------------------------------------------------------------


def test_install_rules_ship_the_same_plugin_sources(tmp_path: Path) -> None:
    """What ``pip install`` puts in naf_export/plugin_src is what the target copies from a checkout."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    configure = ["cmake", "-S", str(REPO), "-B", str(build), "-DSKBUILD_PLATLIB_DIR=unused",
                 "-DNAF_WITH_CUDA=OFF", "-DNAF_BUILD_ONNXRUNTIME=OFF", "-DNAF_BUILD_OPENVINO=OFF",
                 "-DNAF_BUILD_TENSORRT=OFF"]
    for cmd in (configure, ["cmake", "--install", str(build), "--component", "naf_plugin_src", "--prefix", str(prefix)]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    installed = prefix / "naf_export" / "plugin_src"
    assert {str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_file()} == _manifest_targets()


@pytest.fixture(scope="module")
def plugin_src(tmp_path_factory: pytest.TempPathFactory) -> Path:

    if nvcc() is None or shutil.which("cmake") is None:
        pytest.skip("nvcc or cmake not found: plugin_src cannot be compiled here")
    if tensorrt_headers() is None:
        pytest.skip("TensorRT headers not found: pip install --no-deps kernel-lens==2.0.1")
    return trt_target.copy_plugin_sources(tmp_path_factory.mktemp("export") / "plugin_src")


def _configure_plugin_src(src: Path, build: Path, *extra: str) -> None:

    cmd = ["cmake", "-S", str(src), "-B", str(build), f"-DCMAKE_CUDA_COMPILER={nvcc()}",
           f"-DTensorRT_INCLUDE_DIR={tensorrt_headers()}", "-DNAF_CUDA_ARCHITECTURES=87", *extra]  # Jetson Orin
    if shutil.which("ninja"):
        cmd += ["-G", "Ninja"]
    run_checked(cmd, "configuring plugin_src", timeout=120)


def _stub_nvinfer(directory: Path) -> Path:
    """A libnvinfer.so.10 defining the one symbol the plugin library needs from TensorRT, so the
    real shared library links (with --no-undefined) on a machine without TensorRT."""
    if cxx_compiler() is None:
        pytest.skip("no C++ compiler")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "stub.cpp"
    source.write_text('extern "C" void* getPluginRegistry() noexcept { return nullptr; }\n')
    lib = directory / "libnvinfer.so"
    subprocess.run([cxx_compiler(), "-shared", "-fPIC", "-o", str(lib), str(source), "-Wl,-soname,libnvinfer.so.10"],
                   check=True, capture_output=True)
    (directory / "libnvinfer.so.10").symlink_to(lib.name)
    return lib


def test_plugin_src_builds_the_plugin_library(plugin_src: Path, tmp_path: Path) -> None:
    """plugin_src as a Jetson user builds it: the real libnaf_tensorrt.so (against a stub
    libnvinfer), exporting exactly the entry points TensorRT's library loader
    (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins) looks up."""

    build = tmp_path / "plugin_build"
    stub = _stub_nvinfer(tmp_path / "stub")
    _configure_plugin_src(plugin_src, build, f"-DTensorRT_LIBRARY={stub}")
    run_checked(["cmake", "--build", str(build), "--target", "naf_tensorrt", "naf_tensorrt_host_check", "--parallel", "2"],
         "building plugin_src", timeout=300)
    text = "".join(p.read_text() for p in [*build.rglob("flags.make"), *build.glob("build.ninja")])
    assert "sm_87" in text
    library = build / "lib" / "libnaf_tensorrt.so"  # where OUT/plugin_src/README.md says it is
    assert library.is_file()
    # The host check drives the creator and plugin through the shared library.
    result = run_checked([str(next(build.rglob("naf_tensorrt_host_check")))], "naf_tensorrt_host_check", timeout=60)
    assert result.stdout.strip().endswith("OK"), result.stdout + result.stderr

    if shutil.which("readelf") is None:
        return
    dynsym = subprocess.run(["readelf", "--dyn-syms", "-W", str(library)], capture_output=True, text=True,
                            check=True).stdout
    exported = {f[7] for f in (line.split() for line in dynsym.splitlines())
                if len(f) >= 8 and f[4] in ("GLOBAL", "WEAK") and f[6] != "UND"}
    assert exported == {"getCreators", "setLoggerFinder", "naf_tensorrt_register_plugins"}, exported
    needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert "[libnvinfer.so.10]" in needed
    # The CUDA runtime is linked in: a pip-installed TensorRT puts no libcudart on the loader path.
    assert "libcudart" not in needed, needed


def test_plugin_src_compiles_with_static_registration(plugin_src: Path, tmp_path: Path) -> None:

    build = tmp_path / "plugin_build_static"
    _configure_plugin_src(plugin_src, build, "-DNAF_TENSORRT_STATIC_REGISTRATION=ON",
                          "-DTensorRT_LIBRARY=TensorRT_LIBRARY-NOTFOUND")
    run_checked(["cmake", "--build", str(build), "--target", "naf_tensorrt_compile_check", "--parallel", "2"],
         "building plugin_src with NAF_TENSORRT_STATIC_REGISTRATION=ON", timeout=300)


# ---- real TensorRT on a GPU --------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_plugin() -> Path:
    pytest.importorskip("tensorrt", reason="TensorRT's Python bindings are not installed (pip install tensorrt)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to PyTorch (TensorRT engines need one, and a CUDA build of torch)")
    from naf_export.runners import tensorrt as rt

    try:
        return rt.resolve_plugin(search_dirs=(REPO / "build-trt",))
    except FileNotFoundError as exc:
        pytest.skip(f"libnaf_tensorrt.so is not built ({exc})")


@pytest.fixture(scope="module")
def gpu_case(tmp_path_factory: pytest.TempPathFactory):
    """A small NAF export (ratio 2, C=32, dynamic batch) and PyTorch references on sample images."""
    import torch

    from naf_export.checkpoint import load_naf
    from naf_export.onnx_export import export_onnx
    from naf_export.pipeline import ExportConfig, sample_inputs

    config = ExportConfig(image_size=(112, 112), feature_size=(14, 14), channels=32, output_size=(28, 28))
    with pytest.warns(UserWarning):
        model = load_naf(None)
    out = tmp_path_factory.mktemp("trt_gpu")
    path = export_onnx(model, out / "naf_fused.onnx", image_size=config.image_size, feature_size=config.feature_size,
                       channels=config.channels, output_size=config.output_size, dynamic_batch=True)
    inputs = sample_inputs(config, 2)
    with torch.inference_mode():
        refs = [model(torch.from_numpy(i), torch.from_numpy(f), config.output_size).numpy() for i, f in inputs]
    return types.SimpleNamespace(model=model, config=config, out=out, onnx=path, inputs=inputs, refs=refs)


def _parity(runner, case) -> dict[str, float]:
    from naf_export.metrics import parity

    per = [parity(runner(i, f), r) for (i, f), r in zip(case.inputs, case.refs)]
    return {"rel_l2": max(p["rel_l2"] for p in per), "cosine_min": min(p["cosine_min"] for p in per),
            "cosine_mean": float(np.mean([p["cosine_mean"] for p in per]))}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_pytorch(gpu_plugin: Path, gpu_case, precision: str) -> None:
    from naf_export.runners import tensorrt as rt

    engine = gpu_case.out / f"naf_{precision}.engine"
    options = rt.BuildOptions(precision=precision, batch=(1, 1, 4), timing_cache=gpu_case.out / "timing.cache")
    info = rt.build_engine(gpu_case.onnx, engine, options=options, plugin=gpu_plugin)
    assert info["batch_profile"] == [1, 1, 4]
    runner = rt.TensorRtRunner(engine, plugin=gpu_plugin)
    assert runner.batch_range == (1, 1, 4) and runner.input_shapes["image"] == (-1, 3, 112, 112)
    p = _parity(runner, gpu_case)
    if precision == "fp32":
        # TF32 off; TensorRT's float32 convolution tactics and fused reductions still sum in
        # other orders than PyTorch's CPU kernels (ONNX Runtime reaches ~1e-6).
        assert p["rel_l2"] < 1e-4, p
    else:
        assert p["cosine_min"] > 0.999, p

    # Batch 2 within the profile gives the per-image results; batch 5 is refused by name.
    image = np.concatenate([i for i, _ in gpu_case.inputs])
    feats = np.concatenate([f for _, f in gpu_case.inputs])
    both = runner(image, feats)
    assert both.shape == (2, 32, 28, 28) and both.dtype == np.float32
    # Same engine and tactics whatever the batch: only float16 rounding may differ.
    atol = 1e-4 if precision == "fp32" else 1e-2
    np.testing.assert_allclose(both[1:], runner(*gpu_case.inputs[1]), rtol=1e-3, atol=atol)
    with pytest.raises(ValueError, match="image: batch 5"):
        runner(np.repeat(image[:1], 5, axis=0), np.repeat(feats[:1], 5, axis=0))
    with pytest.raises(ValueError, match="features: expected shape"):
        runner(image[:1], feats[:1, :, :7])


def test_int8_engine_matches_pytorch(gpu_plugin: Path, gpu_case) -> None:
    from naf_export.calibration import load_calibration_set
    from naf_export.quantize import quantize_int8
    from naf_export.runners import tensorrt as rt

    qdq = quantize_int8(gpu_case.onnx, gpu_case.out / "naf_fused_int8.onnx",
                        load_calibration_set(None, gpu_case.config, progress=False), progress=False)
    engine = gpu_case.out / "naf_int8.engine"
    info = rt.build_engine(qdq, engine, options=rt.BuildOptions(precision="int8"), plugin=gpu_plugin)
    assert info["flags"] == ["STRONGLY_TYPED"]
    assert _parity(rt.TensorRtRunner(engine, plugin=gpu_plugin), gpu_case)["cosine_mean"] > 0.99


def test_unloadable_engine_is_explained(gpu_plugin: Path, tmp_path: Path) -> None:
    from naf_export.runners import tensorrt as rt

    bad = tmp_path / "naf_fp32.engine"
    bad.write_bytes(b"not an engine")
    Path(str(bad) + ".json").write_text(json.dumps({"tensorrt": "10.0.0", "plugin": str(gpu_plugin)}))
    with pytest.raises(ValueError, match="built with TensorRT 10.0.0"):
        rt.TensorRtRunner(bad)


def test_cli_end_to_end(gpu_plugin: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["--target", "tensorrt", "--fp16", *SMALL, "--plugin", str(gpu_plugin), "--out", str(out),
                 "--runs", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["parity"]["cosine_min"] > 0.999 and report["latency_ms"]["runs"] == 3
    assert Path(report["artifacts"]["engine"]).is_file() and (out / trt_target.TIMING_CACHE).is_file()
    assert os.path.samefile(report["artifacts"]["tensorrt_plugin"], gpu_plugin)

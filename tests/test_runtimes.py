"""runtimes/: naf::Upsampler with its ONNX Runtime and OpenVINO backends, the CLI naf-run, and the
installed CMake package.

Builds runtimes/ with CMake into a temporary tree (never <repo>/build, whose libraries other tests
pick up), exports small artifacts with the Python targets (onnxruntime: naf_fused.onnx with every
naf operation; openvino: the IR), and checks naf-run against the Python runners on the same
artifact and inputs: float CHW images, uint8 frames (against the Python path's own preprocessing
of the same frame: naf_export.samples), picture files, float16 features. Then every error path
(a naf::RuntimeError naming the argument, exit 2/3, never a crash), the host-logic unit tests, the
downstream project built from an install prefix with find_package, and, in an AddressSanitizer +
UBSan build, the same runs plus fuzzing of the .npy and image readers.

The comparisons pass the Python runners' own plugin libraries to naf-run (--plugin), so both sides
run identical binaries. Skips only when the build is impossible here (no CMake, no C++ compiler, no
ONNX Runtime headers and no npm to fetch them); a failing build is a test failure.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from naf_export.metrics import parity
from naf_export.samples import image_to_tensor, load_image_file, normalize_image, resize_image
from native_build import REPO, cxx_compiler, library, run_checked, sanitizer_runtime, skip_unless_buildable

ort = pytest.importorskip("onnxruntime")

IMAGE_SIZE, FEATURE_SIZE, CHANNELS, OUTPUT_SIZE = (64, 64), (9, 9), 16, (18, 18)
THREADS = 2


# --- building ------------------------------------------------------------------------------------
def _build(build: pathlib.Path, targets: list[str], *options: str) -> None:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [
        "cmake", "-S", str(REPO), "-B", str(build), *generator, "-DNAF_WITH_CUDA=OFF", "-DNAF_BUILD_TENSORRT=OFF",
        # ON: a runtime backend that cannot be configured is an error, not a silent skip.
        "-DNAF_BUILD_RUNTIMES=ON", "-DNAF_RUNTIME_ONNXRUNTIME=ON", f"-DPython3_EXECUTABLE={sys.executable}",
        f"-DCMAKE_CXX_COMPILER={cxx_compiler()}", *options,
    ]  # fmt: skip
    run_checked(configure, "configuring runtimes/", timeout=600)
    run_checked(["cmake", "--build", str(build), "-j2", "--target", *targets], "building runtimes/", timeout=1800)


def _have_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    skip_unless_buildable(needs_ort=True, what="the C++ runtimes need building, but")
    build = tmp_path_factory.mktemp("runtimes-build")
    # The ONNX Runtime plugin is built too (the install must hold it); the OpenVINO extension
    # comes from the package (the one the Python runner loads).
    _build(build, ["naf-run", "naf_runtime_unit_tests", "naf_runtime_concurrency_test", "naf_onnxruntime"],
           "-DCMAKE_BUILD_TYPE=Release",
           "-DNAF_BUILD_ONNXRUNTIME=ON", "-DNAF_BUILD_OPENVINO=OFF",
           f"-DNAF_RUNTIME_OPENVINO={'ON' if _have_openvino() else 'OFF'}")  # fmt: skip
    assert (build / "bin" / "naf-run").is_file()
    return build


@pytest.fixture(scope="module")
def naf_run(build_dir) -> pathlib.Path:
    return build_dir / "bin" / "naf-run"


@pytest.fixture(scope="module")
def ort_plugin() -> str:
    return str(library("naf_onnxruntime"))


@pytest.fixture(scope="module")
def ov_plugin() -> str:
    if not _have_openvino():
        pytest.skip("openvino is not installed: the OpenVINO backend is not built")
    return str(library("naf_openvino"))


# --- artifacts and inputs ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from naf_export.checkpoint import load_naf

    return load_naf(None).eval()  # seeded stand-in weights: the numbers need not be meaningful


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, model, ort_plugin) -> dict[str, pathlib.Path]:
    from naf_export.config import ExportConfig
    from naf_export.onnx_export import export_onnx
    from naf_export.targets import ExportRequest, run_target

    out = tmp_path_factory.mktemp("runtime-artifacts")
    config = ExportConfig(IMAGE_SIZE, FEATURE_SIZE, CHANNELS, OUTPUT_SIZE)
    # What the onnxruntime target writes: the fused attention plus GroupNormSiLU and AxialRoPE.
    run_target("onnxruntime", ExportRequest(model=model, config=config, out=out / "ort", samples=1, runs=1))
    paths = {"fused": out / "ort" / "naf_fused.onnx"}
    for name, attention, dynamic in (("portable", "portable", False), ("fused_dynamic", "fused", True)):
        paths[name] = export_onnx(model, out / f"naf_{name}.onnx", image_size=IMAGE_SIZE, feature_size=FEATURE_SIZE,
                                  channels=CHANNELS, output_size=OUTPUT_SIZE, attention=attention,
                                  dynamic_batch=dynamic)  # fmt: skip
    if _have_openvino():
        run_target("openvino", ExportRequest(model=model, config=config, out=out / "ov", samples=1, runs=1))
        paths["ir"] = out / "ov" / "naf_fused_openvino_fp32.xml"
        paths["ov_onnx"] = out / "ov" / "naf_fused.onnx"  # the ONNX the IR was converted from (AxialRoPE)
    rng = np.random.default_rng(0)
    for batch in (1, 2):
        image = rng.standard_normal((batch, 3, *IMAGE_SIZE)).astype(np.float32)
        features = rng.standard_normal((batch, CHANNELS, *FEATURE_SIZE)).astype(np.float32)
        np.save(out / f"image{batch}.npy", image)
        np.save(out / f"features{batch}.npy", features)
        paths[f"image{batch}"], paths[f"features{batch}"] = out / f"image{batch}.npy", out / f"features{batch}.npy"
    np.save(out / "features_f16.npy", np.load(paths["features1"]).astype(np.float16))
    paths["features_f16"] = out / "features_f16.npy"
    return paths


def run_cli(binary: pathlib.Path, *args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def rel_l2(out: np.ndarray, ref: np.ndarray) -> float:
    return parity(out, ref)["rel_l2"]


def python_output(backend: str, model_path, plugin: str, image: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The Python tool's runner on the same artifact (same plugin, same thread count)."""
    if backend == "openvino":
        from naf_export.runners.openvino import OpenVinoRunner

        return OpenVinoRunner(model_path, extension=plugin, threads=THREADS)(image, features)
    from naf_export.runners.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(model_path, plugin=plugin, threads=THREADS)(image, features)


def python_preprocessing(frame: np.ndarray, bgr: bool = False) -> np.ndarray:
    """What the Python tool feeds the model for a uint8 HWC frame (naf_export.samples)."""
    rgb = np.ascontiguousarray(frame[:, :, ::-1]) if bgr else frame
    return normalize_image(resize_image(image_to_tensor(rgb), IMAGE_SIZE))[None].numpy()


def run_naf(naf_run, model_path, image, features, out, *extra, plugin=None, backend=None, env=None) -> np.ndarray:
    args = ["--model", model_path, "--image", image, "--features", features, "--output", out, "--threads", THREADS, *extra]
    if plugin is not None:
        args += ["--plugin", plugin]
    if backend is not None:
        args += ["--backend", backend]
    result = run_cli(naf_run, *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "latency: median" in result.stdout and "peak RSS" in result.stdout, result.stdout
    return np.load(out)


# --- the host-side logic -------------------------------------------------------------------------
def test_runtime_unit_tests(build_dir, tmp_path) -> None:
    """naf::Upsampler's argument checks and TensorRT's host logic (fake engines), no runtime needed."""
    result = run_cli(build_dir / "bin" / "naf_runtime_unit_tests", tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stdout + result.stderr


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_concurrent_runs_on_one_instance(build_dir, artifacts, backend, request) -> None:
    """The documented thread-safety: run() from 3 threads at once on one OrtUpsampler /
    OpenVinoUpsampler gives each thread its sequential result, bit for bit."""
    plugin = _plugin_for(backend, request)
    artifact = artifacts["ir"] if backend == "openvino" else artifacts["fused"]
    result = run_cli(build_dir / "bin" / "naf_runtime_concurrency_test", backend, artifact, plugin, 3, 4)
    assert result.returncode == 0 and result.stdout.startswith("OK (3 threads x 4 runs)"), result.stdout + result.stderr


# --- correctness: float CHW images -----------------------------------------------------------------
BACKENDS = [("onnxruntime", "fused", None), ("onnxruntime", "portable", None), ("openvino", "ir", None),
            ("openvino", "ov_onnx", "openvino")]  # fmt: skip


def _plugin_for(backend: str, request) -> str:
    return request.getfixturevalue("ov_plugin" if backend == "openvino" else "ort_plugin")


@pytest.mark.parametrize(("backend", "artifact", "flag"), BACKENDS, ids=["ort-fused", "ort-portable", "ov-ir", "ov-onnx"])
def test_float_image_matches_python_target(naf_run, artifacts, backend, artifact, flag, tmp_path, request) -> None:
    plugin = _plugin_for(backend, request)
    image, features = np.load(artifacts["image1"]), np.load(artifacts["features1"])
    cli = run_naf(naf_run, artifacts[artifact], artifacts["image1"], artifacts["features1"], tmp_path / "out.npy",
                  "--repeat", 2, plugin=plugin, backend=flag)  # fmt: skip
    assert cli.dtype == np.float32 and cli.shape == (1, CHANNELS, *OUTPUT_SIZE)
    py = python_output(backend, artifacts[artifact], plugin, image, features)
    assert np.array_equal(cli, py) or rel_l2(cli, py) < 1e-6, rel_l2(cli, py)


def test_dynamic_batch_lean_memory_matches_pytorch(naf_run, model, artifacts, ort_plugin, tmp_path) -> None:
    cli = run_naf(naf_run, artifacts["fused_dynamic"], artifacts["image2"], artifacts["features2"], tmp_path / "o.npy",
                  "--lean-memory", plugin=ort_plugin)  # fmt: skip
    py = python_output("onnxruntime", artifacts["fused_dynamic"], ort_plugin, np.load(artifacts["image2"]),
                       np.load(artifacts["features2"]))  # fmt: skip
    assert np.array_equal(cli, py) or rel_l2(cli, py) < 1e-6
    with torch.inference_mode():
        ref = model(torch.from_numpy(np.load(artifacts["image2"])), torch.from_numpy(np.load(artifacts["features2"])),
                    OUTPUT_SIZE).numpy()  # fmt: skip
    assert rel_l2(cli, ref) < 1e-5, rel_l2(cli, ref)


# --- correctness: uint8 frames, picture files, float16 features ----------------------------------------
FRAMES = [((64, 64), "rgb"), ((64, 64), "bgr"), ((120, 90), "rgb"), ((48, 200), "bgr")]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(("size", "order"), FRAMES, ids=[f"{s[0]}x{s[1]}-{o}" for s, o in FRAMES])
def test_uint8_frame_matches_python_preprocessing(naf_run, artifacts, backend, size, order, tmp_path, request) -> None:
    """A camera frame run through naf-run (preprocessed in C++) against the Python runner on the
    Python tool's own preprocessing of the same frame. At the model's size the preprocessed tensors
    are identical; resized, they agree to a float32 rounding step (PyTorch's kernel fuses some
    multiply-adds), well inside the 1e-6 bound on the output."""
    plugin = _plugin_for(backend, request)
    frame = np.random.default_rng(size[0] + size[1]).integers(0, 256, (*size, 3)).astype(np.uint8)
    np.save(tmp_path / "frame.npy", frame)
    artifact = artifacts["ir"] if backend == "openvino" else artifacts["fused"]
    cli = run_naf(naf_run, artifact, tmp_path / "frame.npy", artifacts["features1"], tmp_path / "out.npy",
                  "--channel-order", order, "--save-input", tmp_path / "input.npy", plugin=plugin)  # fmt: skip
    expected_input = python_preprocessing(frame, bgr=order == "bgr")
    fed = np.load(tmp_path / "input.npy")
    if size == IMAGE_SIZE:
        assert np.array_equal(fed, expected_input)
    else:
        assert np.abs(fed - expected_input).max() <= 1e-6
    py = python_output(backend, artifact, plugin, expected_input, np.load(artifacts["features1"]))
    assert rel_l2(cli, py) < 1e-6, rel_l2(cli, py)


PICTURES = [("rgb.png", "RGB"), ("grey.png", "L"), ("rgba.png", "RGBA"), ("palette.png", "P"), ("rgb.jpg", "RGB"),
            ("rgb.ppm", "RGB")]  # fmt: skip


@pytest.mark.parametrize(("name", "mode"), PICTURES, ids=[n for n, _ in PICTURES])
def test_picture_file_matches_python_loader(naf_run, artifacts, ort_plugin, name, mode, tmp_path) -> None:
    """naf-run reads a picture the way naf_export.samples.load_image_file does (PIL, convert("RGB")):
    grey replicated, alpha dropped, palettes expanded."""
    from PIL import Image

    suffix = pathlib.Path(name).suffix
    if suffix != ".ppm":
        wanted = {".png": "PNG", ".jpg": "JPEG"}[suffix]
        if wanted not in run_cli(naf_run, "--version").stdout:
            pytest.skip(f"this naf-run was built without {wanted} support (libpng-dev / libjpeg-dev missing)")
    rng = np.random.default_rng(5)
    smooth = np.kron(rng.integers(0, 256, (12, 16, 4)), np.ones((6, 6, 1))).astype(np.uint8)  # 72x96
    image = Image.fromarray(smooth, "RGBA").convert(mode)
    picture = tmp_path / name
    image.save(picture, **({"quality": 95} if suffix == ".jpg" else {}))
    cli = run_naf(naf_run, artifacts["fused"], picture, artifacts["features1"], tmp_path / "out.npy",
                  "--save-input", tmp_path / "input.npy", plugin=ort_plugin)  # fmt: skip
    expected_input = normalize_image(resize_image(load_image_file(picture), IMAGE_SIZE))[None].numpy()
    # JPEG: both sides decode with libjpeg (PIL bundles its own build): equal, or a step apart.
    assert np.abs(np.load(tmp_path / "input.npy") - expected_input).max() <= (0.05 if suffix == ".jpg" else 1e-6)
    if suffix != ".jpg":
        py = python_output("onnxruntime", artifacts["fused"], ort_plugin, expected_input, np.load(artifacts["features1"]))
        assert rel_l2(cli, py) < 1e-6


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_float16_features(naf_run, artifacts, backend, tmp_path, request) -> None:
    plugin = _plugin_for(backend, request)
    artifact = artifacts["ir"] if backend == "openvino" else artifacts["fused"]
    cli = run_naf(naf_run, artifact, artifacts["image1"], artifacts["features_f16"], tmp_path / "out.npy", plugin=plugin)
    widened = np.load(artifacts["features_f16"]).astype(np.float32)  # exact: every float16 is a float32
    py = python_output(backend, artifact, plugin, np.load(artifacts["image1"]), widened)
    assert np.array_equal(cli, py) or rel_l2(cli, py) < 1e-6


def test_plugin_found_next_to_the_library(naf_run, artifacts, tmp_path) -> None:
    """Without --plugin, libnaf_onnxruntime.so next to libnaf_runtime_onnxruntime.so is loaded."""
    result = run_cli(naf_run, "--model", artifacts["fused"], "--image", artifacts["image1"], "--features",
                     artifacts["features1"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"plugin {naf_run.parent.parent / 'lib' / 'libnaf_onnxruntime.so'}" in result.stdout, result.stdout


# --- errors ----------------------------------------------------------------------------------------
def _assert_clean_failure(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, f"exit {result.returncode}:\n{output}"  # negative: killed by a signal
    assert "naf-run: error:" in result.stderr, output
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{output}"


def test_missing_plugin_names_the_library(prefix, artifacts, tmp_path) -> None:
    """An installed naf-run whose lib/ lacks libnaf_onnxruntime.so (copied without it: the
    installed binaries find their libraries through $ORIGIN/../lib)."""
    for sub in ("bin", "lib"):
        (tmp_path / sub).mkdir()
    shutil.copy2(prefix / "bin" / "naf-run", tmp_path / "bin")
    for lib in (*(prefix / "lib").glob("libnaf_runtime*.so"), prefix / "lib" / "libonnxruntime.so.1"):
        shutil.copy2(lib, tmp_path / "lib")
    result = run_cli(tmp_path / "bin" / "naf-run", "--model", artifacts["fused"], "--image", artifacts["image1"],
                     "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "plugin:", "libnaf_onnxruntime.so", "GroupNormSiLU", "is not next to this library")


def test_plugin_path_that_does_not_exist(naf_run, artifacts, tmp_path) -> None:
    result = run_cli(naf_run, "--model", artifacts["fused"], "--plugin", tmp_path / "libnaf_onnxruntime.so",
                     "--image", artifacts["image1"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "plugin: no such file")


def test_plugin_of_the_wrong_kind(naf_run, artifacts, ov_plugin) -> None:
    result = run_cli(naf_run, "--model", artifacts["fused"], "--plugin", ov_plugin, "--image", artifacts["image1"],
                     "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "plugin:", "is the OpenVINO extension library libnaf_openvino.so",
                          "does not define RegisterCustomOps")


def test_openvino_extension_of_another_release(naf_run, artifacts, ov_plugin, tmp_path) -> None:
    """An extension built for another OpenVINO release is refused before OpenVINO loads it."""
    shutil.copy2(ov_plugin, tmp_path / "libnaf_openvino.so")
    (tmp_path / "naf_openvino.json").write_text(json.dumps({"library": "libnaf_openvino.so",
                                                             "openvino_version": "2020.1.0"}))
    result = run_cli(naf_run, "--model", artifacts["ir"], "--plugin", tmp_path / "libnaf_openvino.so", "--image",
                     artifacts["image1"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "plugin:", "was built against OpenVINO 2020.1.0, but this process runs OpenVINO")


def test_onnxruntime_only_export_on_openvino(naf_run, artifacts, ov_plugin) -> None:
    """The onnxruntime target's ONNX holds GroupNormSiLU, which OpenVINO has no extension for."""
    result = run_cli(naf_run, "--model", artifacts["fused"], "--backend", "openvino", "--plugin", ov_plugin, "--image",
                     artifacts["image1"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "model: OpenVINO cannot read", "GroupNormSiLU is an ONNX Runtime-only operation")


def test_ir_without_weights(naf_run, artifacts, ov_plugin, tmp_path) -> None:
    shutil.copy2(artifacts["ir"], tmp_path / "naf.xml")
    result = run_cli(naf_run, "--model", tmp_path / "naf.xml", "--plugin", ov_plugin, "--image", artifacts["image1"],
                     "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "model: the IR weights", "are missing")


@pytest.mark.parametrize(
    ("image_shape", "features_shape", "needle"),
    [
        ((1, 3, 64, 65), (1, CHANNELS, 9, 9), "image: expected a float32 tensor of shape (B, 3, Hi, Wi) = (1, 3, 64, 64)"),
        ((1, 3, 64, 64), (1, CHANNELS + 1, 9, 9), "features: expected a float32 tensor of shape (B, C, h, w)"),
        ((1, 3, 64), (1, CHANNELS, 9, 9), "image: expected"),
        ((2, 3, 64, 64), (2, CHANNELS, 9, 9), "image: expected"),  # static batch 1
    ],
    ids=["image-width", "features-channels", "image-rank", "static-batch"],
)
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_wrong_input_shape_names_the_argument(naf_run, artifacts, tmp_path, image_shape, features_shape, needle,
                                              backend, request) -> None:  # fmt: skip
    plugin = _plugin_for(backend, request)
    np.save(tmp_path / "i.npy", np.zeros(image_shape, np.float32))
    np.save(tmp_path / "f.npy", np.zeros(features_shape, np.float32))
    artifact = artifacts["ir"] if backend == "openvino" else artifacts["fused"]
    result = run_cli(naf_run, "--model", artifact, "--plugin", plugin, "--image", tmp_path / "i.npy", "--features",
                     tmp_path / "f.npy")  # fmt: skip
    _assert_clean_failure(result, needle)


STUB_ORT = r"""
/* A stand-in libonnxruntime of another release: VERSION as its version string, and a C API table
   (a dummy) only when HAS_API. The runtime must refuse it before calling anything in the table. */
#include <stddef.h>
typedef struct OrtApiBase {
  const void* (*GetApi)(unsigned version);
  const char* (*GetVersionString)(void);
} OrtApiBase;
static const char dummy[4096];
static const void* get_api(unsigned version) { (void)version; return HAS_API ? dummy : NULL; }
static const char* version_string(void) { return VERSION; }
static const OrtApiBase base = {get_api, version_string};
const OrtApiBase* OrtGetApiBase(void) { return &base; }
"""


@pytest.mark.parametrize(
    ("version", "has_api", "needle"),
    [("1.10.0", 0, "onnxruntime: ONNX Runtime 1.10.0 ("), ("1.16.3", 1, "needs ONNX Runtime 1.17 or newer, this process "
                                                                          "runs ONNX Runtime 1.16.3")],
    ids=["no-c-api-14", "older-than-the-plugin"],
)
def test_mismatched_onnxruntime_is_refused(naf_run, artifacts, ort_plugin, tmp_path, version, has_api, needle) -> None:
    """libonnxruntime is opened at run time: a release too old for the runtime (or for the plugin)
    is a clean error (exit 3, runtime missing), not a failure of the dynamic loader."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in libonnxruntime")
    (tmp_path / "stub.c").write_text(STUB_ORT)
    stub = tmp_path / "libonnxruntime.so.1"
    run_checked([compiler, "-shared", "-fPIC", f'-DVERSION="{version}"', f"-DHAS_API={has_api}", "-o", str(stub),
                 str(tmp_path / "stub.c")], "building the stand-in libonnxruntime", timeout=120)  # fmt: skip
    result = run_cli(naf_run, "--model", artifacts["fused"], "--plugin", ort_plugin, "--ort-library", stub, "--image",
                     artifacts["image1"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, needle, code=3)
    result = run_cli(naf_run, "--model", artifacts["fused"], "--ort-library", tmp_path / "none.so", "--image",
                     artifacts["image1"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "onnxruntime: cannot load libonnxruntime", "none.so", code=3)


def test_batch_mismatch_on_dynamic_model(naf_run, artifacts, ort_plugin) -> None:
    result = run_cli(naf_run, "--model", artifacts["fused_dynamic"], "--plugin", ort_plugin, "--image",
                     artifacts["image2"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "features: batch size 1 differs from the image's 2")


@pytest.mark.parametrize(
    ("model_name", "content", "backend", "needle", "code"),
    [
        ("missing.onnx", None, None, "model: no such file", 2),
        ("naf.onnx", "npy", None, "is a NumPy .npy file, not an exported NAF model", 2),
        ("naf.onnx", b"\x08\x07garbage", None, "model: ONNX Runtime cannot load", 2),
        ("naf.xml", b"<net/>", "onnxruntime", "an OpenVINO IR, run by the openvino backend", 2),
        ("weights.pt", b"x", None, "model: cannot tell the backend", 2),
        ("naf.engine", b"x", None, "this naf-run was built without the tensorrt backend", 3),
        ("naf.onnx", b"x", "coreml", "backend: unknown backend 'coreml'", 2),
    ],
    ids=["missing", "npy-as-onnx", "corrupt-onnx", "ir-to-ort", "unknown-kind", "engine-no-trt", "bad-backend"],
)
def test_bad_artifacts(naf_run, artifacts, tmp_path, model_name, content, backend, needle, code) -> None:
    model_path = tmp_path / model_name
    if content == "npy":
        shutil.copy2(artifacts["image1"], model_path)
    elif content is not None:
        model_path.write_bytes(content)
    args = ["--model", model_path, "--image", artifacts["image1"], "--features", artifacts["features1"]]
    result = run_cli(naf_run, *args, *(["--backend", backend] if backend else []))
    _assert_clean_failure(result, needle, code=code)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model"], "--model needs a value"),
        (["--frobnicate", "1"], "unknown argument '--frobnicate'"),
        (["--model", "m.onnx", "--image", "i.npy", "--features", "f.npy", "--threads", "two"], "--threads expects"),
        (["--model", "m.onnx", "--image", "i.npy", "--features", "f.npy", "--repeat", "0"], "--repeat expects"),
        (["--model", "m.onnx", "--image", "i.npy"], "--features is required"),
        (["--model", "m.onnx", "--image", "i.npy", "--features", "f.npy", "--channel-order", "rgba"], "--channel-order"),
    ],
    ids=["no-value", "unknown", "threads", "repeat", "required", "channel-order"],
)
def test_usage_errors(naf_run, args, needle) -> None:
    _assert_clean_failure(run_cli(naf_run, *args), needle, code=2)


def test_bad_frames_and_features(naf_run, artifacts, ort_plugin, tmp_path) -> None:
    np.save(tmp_path / "gray.npy", np.zeros((64, 64), np.uint8))
    result = run_cli(naf_run, "--model", artifacts["fused"], "--image", tmp_path / "gray.npy", "--features",
                     artifacts["features1"], "--plugin", ort_plugin)  # fmt: skip
    _assert_clean_failure(result, "a uint8 image must be a frame of shape (H, W, 3)")
    np.save(tmp_path / "u8f.npy", np.zeros((1, CHANNELS, 9, 9), np.uint8))
    result = run_cli(naf_run, "--model", artifacts["fused"], "--image", artifacts["image1"], "--features",
                     tmp_path / "u8f.npy", "--plugin", ort_plugin)  # fmt: skip
    _assert_clean_failure(result, "expected float32 or float16, got uint8")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    result = run_cli(naf_run, "--model", artifacts["fused"], "--image", tmp_path / "broken.png", "--features",
                     artifacts["features1"], "--plugin", ort_plugin)  # fmt: skip
    _assert_clean_failure(result, f"image '{tmp_path / 'broken.png'}'")
    # Decompression bombs: a header declaring 20000 x 20000 pixels is refused before decoding.
    import zlib

    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    def chunk(body: bytes) -> bytes:
        return struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))

    idat = b"IDAT" + zlib.compress(b"\0" * 64)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(ihdr) + chunk(idat) + chunk(b"IEND"))
    (tmp_path / "bomb.ppm").write_bytes(b"P6 20000 20000 255\n" + b"\0" * 64)
    for bomb in ("bomb.ppm", "bomb.png") if "PNG" in run_cli(naf_run, "--version").stdout else ("bomb.ppm",):
        result = run_cli(naf_run, "--model", artifacts["fused"], "--image", tmp_path / bomb, "--features",
                         artifacts["features1"], "--plugin", ort_plugin)  # fmt: skip
        _assert_clean_failure(result, "declares 20000x20000 pixels, more than the 89478485 naf-run decodes")


def npy_bytes(header: str, data: bytes, version: int = 1) -> bytes:
    """A .npy file with an arbitrary header dict text, padded the way numpy pads it."""
    prefix = 10 if version == 1 else 12
    text = header + " " * ((-(prefix + len(header) + 1)) % 64) + "\n"
    length = struct.pack("<H" if version == 1 else "<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + length + text.encode("latin1") + data


def corrupt_files(valid: bytes, features: np.ndarray) -> dict[str, bytes]:
    data = features.tobytes()
    good = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }"
    shape = str(features.shape)
    return {
        "empty": b"",
        "magic-only": valid[:6],
        "header-cut": valid[:40],
        "data-cut": valid[:-10],
        "bad-magic": b"\x93NUMPX" + valid[6:],
        "version-9": valid[:6] + b"\x09\x00" + valid[8:],
        "header-len-huge": valid[:8] + b"\xff\xff" + valid[10:],
        "trailing-bytes": valid + b"\0\0\0\0",
        "float64": npy_bytes(good.replace("<f4", "<f8") % shape, features.astype("<f8").tobytes()),
        "big-endian": npy_bytes(good.replace("<f4", ">f4") % shape, features.astype(">f4").tobytes()),
        "fortran": npy_bytes(good.replace("False", "True") % shape, data),
        "unclosed-dict": npy_bytes((good % shape)[:-2], data),
        "unclosed-tuple": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 16, 9, 9", data),
        "negative-dim": npy_bytes(good % "(-1, 16, 9, 9)", data),
        "overflow-shape": npy_bytes(good % "(4611686018427387904, 4611686018427387904)", data),
        "missing-key": npy_bytes("{'descr': '<f4', 'shape': %s, }" % shape, data),
        "duplicate-key": npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': %s}" % shape, data),
        "pickled-object": npy_bytes(good.replace("<f4", "|O") % "(2,)", b"\x80\x04N."),
        "huge-shape-small-file": npy_bytes(good % "(100000, 100000, 100000)", data),
        "f16-data-cut": npy_bytes(good.replace("<f4", "<f2") % shape, features.astype("<f2").tobytes()[:-2]),
    }


@pytest.fixture(scope="module")
def corrupt_dir(artifacts, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("corrupt-npy")
    valid = artifacts["features1"].read_bytes()
    for name, content in corrupt_files(valid, np.load(artifacts["features1"])).items():
        (out / f"{name}.npy").write_bytes(content)
    (out / "a-directory.npy").mkdir()
    return out


CORRUPT_NAMES = sorted([*corrupt_files(b"0" * 200, np.zeros((1, 2, 3, 4), np.float32)), "a-directory"])


@pytest.mark.parametrize("name", CORRUPT_NAMES)
def test_corrupt_npy_is_a_clean_error(naf_run, artifacts, corrupt_dir, name) -> None:
    result = run_cli(naf_run, "--model", artifacts["portable"], "--image", artifacts["image1"], "--features",
                     corrupt_dir / f"{name}.npy")  # fmt: skip
    _assert_clean_failure(result, f"features '{corrupt_dir / name}.npy'")


def test_output_is_a_valid_npy_for_numpy(naf_run, artifacts, tmp_path) -> None:
    out = tmp_path / "sub dir" / "out.npy"
    out.parent.mkdir()
    result = run_cli(naf_run, "--model", artifacts["portable"], "--image", artifacts["image1"], "--features",
                     artifacts["features1"], "--output", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as f:
        assert np.lib.format.read_magic(f) == (1, 0)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        assert f.tell() % 64 == 0  # data aligned like numpy's own files
    assert (shape, fortran, dtype) == ((1, CHANNELS, *OUTPUT_SIZE), False, np.dtype("<f4"))


# --- the CMake package ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prefix(build_dir, tmp_path_factory) -> pathlib.Path:
    prefix = tmp_path_factory.mktemp("naf-prefix")
    # Install needs every default target built (it installs the plugins and naf-run).
    run_checked(["cmake", "--build", str(build_dir), "-j2"], "building everything for install", timeout=1800)
    run_checked(["cmake", "--install", str(build_dir), "--prefix", str(prefix)], "cmake --install", timeout=300)
    return prefix


def test_install_prefix_layout(prefix) -> None:
    for name in ("include/naf/upsampler.h", "include/naf/onnxruntime_upsampler.h", "lib/libnaf_runtime.so",
                 "lib/libnaf_runtime_onnxruntime.so", "lib/libnaf_onnxruntime.so", "lib/libonnxruntime.so.1",
                 "bin/naf-run", "lib/cmake/naf_runtimes/naf_runtimesConfig.cmake",
                 "lib/cmake/naf_runtimes/naf_runtimes_onnxruntimeTargets.cmake"):  # fmt: skip
        assert (prefix / name).exists(), name
    # The installed CLI runs from the prefix alone (RUNPATH $ORIGIN/../lib, ONNX Runtime bundled).
    result = run_cli(prefix / "bin" / "naf-run", "--version")
    assert result.returncode == 0 and "onnxruntime" in result.stdout, result.stderr


def _configure_downstream(prefix, build, *components) -> subprocess.CompletedProcess:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    source = REPO / "runtimes" / "examples" / "downstream"
    cmd = ["cmake", "-S", str(source), "-B", str(build), *generator, f"-DCMAKE_PREFIX_PATH={prefix}",
           f"-DCMAKE_CXX_COMPILER={cxx_compiler()}"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_downstream_project_builds_from_the_prefix_and_matches_python(prefix, artifacts, ort_plugin, tmp_path) -> None:
    """runtimes/examples/downstream: find_package(naf_runtimes REQUIRED COMPONENTS onnxruntime) and one
    target_link_libraries line, built against the install prefix only, run on a BGR camera frame."""
    build = tmp_path / "downstream"
    configured = _configure_downstream(prefix, build)
    assert configured.returncode == 0, configured.stdout + configured.stderr
    run_checked(["cmake", "--build", str(build)], "building the downstream project", timeout=600)
    frame = np.random.default_rng(11).integers(0, 256, (90, 160, 3)).astype(np.uint8)
    frame.tofile(tmp_path / "frame.bgr")
    np.load(artifacts["features1"]).tofile(tmp_path / "features.f32")
    exe = next(p for p in (build / "naf_downstream", build / "Release" / "naf_downstream") if p.is_file())
    result = run_cli(exe, artifacts["fused"], tmp_path / "frame.bgr", 90, 160, tmp_path / "features.f32",
                     tmp_path / "out.f32", "bgr")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"onnxruntime {ort.__version__}: upsampled (1, {CHANNELS}, {OUTPUT_SIZE[0]}, {OUTPUT_SIZE[1]})" in result.stdout
    out = np.fromfile(tmp_path / "out.f32", np.float32).reshape(1, CHANNELS, *OUTPUT_SIZE)
    py = python_output("onnxruntime", artifacts["fused"], ort_plugin, python_preprocessing(frame, bgr=True),
                       np.load(artifacts["features1"]))  # fmt: skip
    assert rel_l2(out, py) < 1e-6, rel_l2(out, py)


def test_downstream_asking_for_a_missing_component_fails_clearly(prefix, tmp_path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(x LANGUAGES CXX)\n"
        "find_package(naf_runtimes REQUIRED COMPONENTS tensorrt)\n"
    )
    result = subprocess.run(["cmake", "-S", str(source), "-B", str(tmp_path / "b"), f"-DCMAKE_PREFIX_PATH={prefix}"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode != 0
    assert "component 'tensorrt' is not in this install" in result.stdout + result.stderr


# --- AddressSanitizer --------------------------------------------------------------------------------
def _png_jpeg_seeds(out: pathlib.Path) -> list[pathlib.Path]:
    from PIL import Image

    rng = np.random.default_rng(3)
    rgb = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8)
    seeds = []
    for name, mode in (("rgb.png", "RGB"), ("gray.png", "L"), ("rgba.png", "RGBA"), ("palette.png", "P"),
                       ("rgb.jpg", "RGB"), ("gray.jpg", "L")):  # fmt: skip
        image = Image.fromarray(rgb).convert(mode)
        image.save(out / name, **({"interlace": 1} if name == "palette.png" else {}))
        seeds.append(out / name)
    header = b"P6\n# a comment\n32 24\n255\n"
    (out / "rgb.ppm").write_bytes(header + rgb.tobytes())
    (out / "gray.pgm").write_bytes(b"P5 32 24 255\n" + rgb[:, :, 0].tobytes())
    return [*seeds, out / "rgb.ppm", out / "gray.pgm"]


@pytest.mark.slow
def test_runtimes_and_readers_under_asan(tmp_path_factory, artifacts, corrupt_dir, tmp_path) -> None:
    """naf-run, the unit tests and the readers built with ASan + UBSan; the ONNX Runtime plugin too
    (inside the prebuilt, uninstrumented libonnxruntime: the executable links the sanitizer
    runtimes first, so nothing is preloaded). Leak checking stays on."""
    skip_unless_buildable(needs_ort=True, what="the C++ runtimes need building, but")
    compiler = cxx_compiler()
    if sanitizer_runtime(compiler, "libasan.so") is None or sanitizer_runtime(compiler, "libubsan.so") is None:
        pytest.skip(f"{compiler} has no AddressSanitizer/UBSan runtime (libasan.so/libubsan.so)")
    build = tmp_path_factory.mktemp("runtimes-asan")
    _build(build, ["naf-run", "naf_npy_fuzz", "naf_image_fuzz", "naf_runtime_unit_tests", "naf_runtime_concurrency_test",
                   "naf_onnxruntime"],
           "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DNAF_SANITIZE=ON", "-DNAF_BUILD_ONNXRUNTIME=ON",
           "-DNAF_BUILD_OPENVINO=OFF", "-DNAF_RUNTIME_OPENVINO=OFF")  # fmt: skip
    binary, asan_plugin = build / "bin" / "naf-run", str(build / "lib" / "libnaf_onnxruntime.so")
    env = dict(os.environ, ASAN_OPTIONS="abort_on_error=1:detect_leaks=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")  # fmt: skip
    env.pop("LD_PRELOAD", None)

    def clean(result: subprocess.CompletedProcess) -> None:
        output = result.stdout + result.stderr
        assert "Sanitizer" not in output and "runtime error:" not in output, output[-6000:]

    result = run_cli(build / "bin" / "naf_runtime_unit_tests", tmp_path, env=env)
    clean(result)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stdout + result.stderr
    result = run_cli(build / "bin" / "naf_runtime_concurrency_test", "onnxruntime", artifacts["fused"], asan_plugin, 3, 2,
                     env=env)  # fmt: skip
    clean(result)
    assert result.returncode == 0 and result.stdout.startswith("OK"), result.stdout + result.stderr

    # Normal runs (float image, resized BGR frame, float16 features, dynamic batch): Python's numbers.
    np.save(tmp_path / "frame.npy", np.random.default_rng(1).integers(0, 256, (50, 90, 3)).astype(np.uint8))
    ort_plugin = str(library("naf_onnxruntime"))
    for name, image, features, extra in (
        ("fused", "image1", "features1", ["--repeat", "2"]),
        ("fused", tmp_path / "frame.npy", "features_f16", ["--channel-order", "bgr"]),
        ("fused_dynamic", "image2", "features2", ["--lean-memory"]),
    ):
        image_path = artifacts[image] if isinstance(image, str) else image
        out = tmp_path / f"asan_{name}.npy"
        result = run_cli(binary, "--model", artifacts[name], "--plugin", asan_plugin, "--image", image_path,
                         "--features", artifacts[features], "--output", out, "--threads", THREADS, *extra, env=env)  # fmt: skip
        clean(result)
        assert result.returncode == 0, result.stdout + result.stderr
        feed = np.load(image_path)
        feed = python_preprocessing(feed, bgr=True) if feed.dtype == np.uint8 else feed
        py = python_output("onnxruntime", artifacts[name], ort_plugin, feed,
                           np.load(artifacts[features]).astype(np.float32))  # fmt: skip
        assert rel_l2(np.load(out), py) < 1e-6

    # Every corrupt file, and the error paths of the runtime library.
    for name in CORRUPT_NAMES:
        result = run_cli(binary, "--model", artifacts["portable"], "--image", artifacts["image1"], "--features",
                         corrupt_dir / f"{name}.npy", env=env)  # fmt: skip
        clean(result)
        _assert_clean_failure(result, "features '")
    for args, needle in (
        (["--model", artifacts["fused"], "--plugin", tmp_path / "none.so"], "plugin: no such file"),
        (["--model", tmp_path / "missing.onnx"], "model: no such file"),
        (["--model", artifacts["image1"].with_suffix(".npy")], "model: cannot tell the backend"),
    ):
        result = run_cli(binary, *args, "--image", artifacts["image1"], "--features", artifacts["features1"], env=env)
        clean(result)
        _assert_clean_failure(result, needle)

    # The readers alone: every input in a heap buffer of exactly its size, so any read past the
    # end hits a redzone. Random mutations of valid files, then the hand-made corrupt ones.
    fuzz = build / "bin" / "naf_npy_fuzz"
    v2 = tmp_path / "v2.npy"
    with open(v2, "wb") as f:
        np.lib.format.write_array(f, np.load(artifacts["features1"]), version=(2, 0))
    for seed, path in ((1, artifacts["features1"]), (2, artifacts["image1"]), (3, v2), (4, artifacts["features_f16"]),
                       (5, tmp_path / "frame.npy")):  # fmt: skip
        result = subprocess.run([str(fuzz), "--mutate", str(seed), "20000", str(path)], capture_output=True,
                                text=True, env=env, timeout=600)  # fmt: skip
        clean(result)
        assert result.returncode == 0 and "rejected" in result.stdout, result.stdout + result.stderr
    result = subprocess.run([str(fuzz), *(str(p) for p in sorted(corrupt_dir.glob("*.npy")) if p.is_file()),
                             str(artifacts["features1"])], capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    clean(result)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == len(CORRUPT_NAMES), result.stdout + result.stderr
    assert all(line.startswith("error ") for line in lines[:-1]), lines
    assert lines[-1].startswith(f"ok (1, {CHANNELS}, 9, 9) float32"), lines

    image_fuzz = build / "bin" / "naf_image_fuzz"
    seeds = _png_jpeg_seeds(tmp_path)
    result = subprocess.run([str(image_fuzz), *map(str, seeds)], capture_output=True, text=True, env=env, timeout=600)
    clean(result)
    decoded = [line for line in result.stdout.splitlines() if line.startswith("ok 32x24")]
    formats = run_cli(binary, "--version").stdout
    expected = 2 + 4 * ("PNG" in formats) + 2 * ("JPEG" in formats)
    assert result.returncode == 0 and len(decoded) == expected, result.stdout + result.stderr
    for seed, path in enumerate(seeds):
        result = subprocess.run([str(image_fuzz), "--mutate", str(seed + 1), "3000", str(path)], capture_output=True,
                                text=True, env=env, timeout=600)  # fmt: skip
        clean(result)
        assert result.returncode == 0 and "rejected" in result.stdout, result.stdout + result.stderr

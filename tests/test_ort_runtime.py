"""runtimes/onnxruntime: the C++ runtime (naf::OrtUpsampler) and its CLI naf-ort-run.

Builds the runtime with CMake into a temporary tree (never <repo>/build, whose libraries other
tests pick up), exports small fused and portable models, and checks naf-ort-run against the Python
ONNX Runtime runner (same plugin, same thread count) and PyTorch; then its errors (missing plugin,
wrong shapes, corrupt .npy files, missing model), and, in a second AddressSanitizer + UBSan build,
the same runs plus a fuzz of the .npy reader.

Skips only when the build is impossible here (no CMake, no C++ compiler, no ONNX Runtime headers
and no npm to fetch them); a failing build is a test failure.
"""

from __future__ import annotations

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
from native_build import REPO, cxx_compiler, library, sanitizer_runtime, skip_unless_buildable

ort = pytest.importorskip("onnxruntime")

IMAGE_SIZE, FEATURE_SIZE, CHANNELS, OUTPUT_SIZE = (64, 64), (9, 9), 32, (36, 36)
THREADS = 2


# --- building ------------------------------------------------------------------------------------
def _build(build: pathlib.Path, targets: list[str], *options: str) -> None:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [
        "cmake", "-S", str(REPO), "-B", str(build), *generator, "-DNAF_WITH_CUDA=OFF",
        "-DNAF_BUILD_OPENVINO=OFF", "-DNAF_BUILD_TENSORRT=OFF",
        # ON: a runtime that cannot be configured is an error, not a silent skip.
        "-DNAF_BUILD_RUNTIMES=ON", f"-DPython3_EXECUTABLE={sys.executable}",
        f"-DCMAKE_CXX_COMPILER={cxx_compiler()}", *options,
    ]  # fmt: skip
    for cmd in (configure, ["cmake", "--build", str(build), "-j2", "--target", *targets]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    skip_unless_buildable(needs_ort=True, what="the C++ runtime needs building, but")
    build = tmp_path_factory.mktemp("ort-runtime-build")
    # The plugin comes from the package (the one the Python runner uses), so it is not rebuilt.
    _build(build, ["naf-ort-run", "naf_ort_embed_example"], "-DCMAKE_BUILD_TYPE=Release",
           "-DNAF_BUILD_ONNXRUNTIME=OFF")
    assert (build / "bin" / "naf-ort-run").is_file()
    return build


@pytest.fixture(scope="module")
def plugin() -> str:
    return str(library("naf_onnxruntime"))


# --- models and inputs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from naf_export.checkpoint import load_naf

    return load_naf(None).eval()  # seeded stand-in weights: the numbers need not be meaningful


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, model) -> dict[str, pathlib.Path]:
    from naf_export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("ort-runtime-artifacts")
    paths: dict[str, pathlib.Path] = {}
    for name, attention, dynamic in (("fused", "fused", False), ("portable", "portable", False),
                                     ("fused_dynamic", "fused", True)):  # fmt: skip
        paths[name] = export_onnx(model, out / f"naf_{name}.onnx", image_size=IMAGE_SIZE, feature_size=FEATURE_SIZE,
                                  channels=CHANNELS, output_size=OUTPUT_SIZE, attention=attention,
                                  dynamic_batch=dynamic)  # fmt: skip
    rng = np.random.default_rng(0)
    for batch in (1, 2):
        image = rng.standard_normal((batch, 3, *IMAGE_SIZE)).astype(np.float32)
        features = rng.standard_normal((batch, CHANNELS, *FEATURE_SIZE)).astype(np.float32)
        np.save(out / f"image{batch}.npy", image)
        np.save(out / f"features{batch}.npy", features)
        paths[f"image{batch}"], paths[f"features{batch}"] = out / f"image{batch}.npy", out / f"features{batch}.npy"
    return paths


def run_cli(binary: pathlib.Path, *args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def rel_l2(out: np.ndarray, ref: np.ndarray) -> float:
    return parity(out, ref)["rel_l2"]


def python_runner_output(model_path, plugin: str, batch: int, artifacts) -> np.ndarray:
    from naf_export.runners.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(model_path, plugin=plugin, threads=THREADS)
    return runner(np.load(artifacts[f"image{batch}"]), np.load(artifacts[f"features{batch}"]))


def pytorch_output(model, batch: int, artifacts) -> np.ndarray:
    image, features = (torch.from_numpy(np.load(artifacts[f"{n}{batch}"])) for n in ("image", "features"))
    with torch.inference_mode():
        return model(image, features, OUTPUT_SIZE).numpy()


def cli_args(artifacts, name: str, batch: int, out, plugin: str, *extra) -> list:
    """naf-ort-run arguments for artifact ``name`` on the batch-``batch`` inputs, writing ``out``
    (the plugin only for fused models)."""
    args = ["--model", artifacts[name], "--image", artifacts[f"image{batch}"], "--features",
            artifacts[f"features{batch}"], "--output", out, "--threads", THREADS, *extra]  # fmt: skip
    return args + ["--plugin", plugin] if "fused" in name else args


def check_cli_run(binary, model, artifacts, plugin, name, batch, tmp_path, *extra, env=None) -> np.ndarray:
    out = tmp_path / f"out_{name}.npy"
    result = run_cli(binary, *cli_args(artifacts, name, batch, out, plugin, *extra), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "latency: median" in result.stdout and "peak RSS" in result.stdout, result.stdout
    cli = np.load(out)
    assert cli.dtype == np.float32 and cli.shape == (batch, CHANNELS, *OUTPUT_SIZE)
    # Same runtime, same plugin, same threads: expected bitwise equal; 1e-6 leaves room for a
    # different kernel choice between the wheel's Python module and its shared library.
    py = python_runner_output(artifacts[name], plugin, batch, artifacts)
    assert np.array_equal(cli, py) or rel_l2(cli, py) < 1e-6, rel_l2(cli, py)
    ref = pytorch_output(model, batch, artifacts)
    assert rel_l2(cli, ref) < 1e-5, rel_l2(cli, ref)
    return cli


# --- correctness ---------------------------------------------------------------------------------
def test_fused_matches_python_runner_and_pytorch(build_dir, model, artifacts, plugin, tmp_path) -> None:
    check_cli_run(build_dir / "bin" / "naf-ort-run", model, artifacts, plugin, "fused", 1, tmp_path, "--repeat", 3)


def test_portable_runs_without_plugin(build_dir, model, artifacts, plugin, tmp_path) -> None:
    check_cli_run(build_dir / "bin" / "naf-ort-run", model, artifacts, plugin, "portable", 1, tmp_path)


def test_dynamic_batch_lean_memory(build_dir, model, artifacts, plugin, tmp_path) -> None:
    check_cli_run(build_dir / "bin" / "naf-ort-run", model, artifacts, plugin, "fused_dynamic", 2, tmp_path,
                  "--lean-memory")  # fmt: skip


def test_embed_example(build_dir, artifacts, plugin) -> None:
    # Constant features: every output is a convex combination of ones.
    result = run_cli(build_dir / "bin" / "naf_ort_embed_example", artifacts["fused"], plugin)
    assert result.returncode == 0, result.stderr
    assert f"upsampled (1, {CHANNELS}, {OUTPUT_SIZE[0]}, {OUTPUT_SIZE[1]}), mean 1.0000" in result.stdout


# --- errors --------------------------------------------------------------------------------------
def _assert_clean_failure(result: subprocess.CompletedProcess, *needles: str, code: int = 1) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, f"exit {result.returncode}:\n{output}"  # negative: killed by a signal
    assert "naf-ort-run: error:" in result.stderr, output
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{output}"


def test_missing_plugin_names_the_library(build_dir, artifacts) -> None:
    result = run_cli(build_dir / "bin" / "naf-ort-run", "--model", artifacts["fused"], "--image", artifacts["image1"],
                     "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "plugin:", "libnaf_onnxruntime.so", "CrossScaleNeighborhoodAttention")


def test_plugin_path_that_does_not_exist(build_dir, artifacts, tmp_path) -> None:
    result = run_cli(build_dir / "bin" / "naf-ort-run", "--model", artifacts["fused"], "--plugin",
                     tmp_path / "libnaf_onnxruntime.so", "--image", artifacts["image1"], "--features",
                     artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "plugin: no such file")


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
def test_wrong_input_shape_names_the_argument(build_dir, artifacts, plugin, tmp_path, image_shape, features_shape,
                                              needle) -> None:  # fmt: skip
    np.save(tmp_path / "i.npy", np.zeros(image_shape, np.float32))
    np.save(tmp_path / "f.npy", np.zeros(features_shape, np.float32))
    result = run_cli(build_dir / "bin" / "naf-ort-run", "--model", artifacts["fused"], "--plugin", plugin,
                     "--image", tmp_path / "i.npy", "--features", tmp_path / "f.npy")  # fmt: skip
    _assert_clean_failure(result, needle)


def test_batch_mismatch_on_dynamic_model(build_dir, artifacts, plugin) -> None:
    result = run_cli(build_dir / "bin" / "naf-ort-run", "--model", artifacts["fused_dynamic"], "--plugin", plugin,
                     "--image", artifacts["image2"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "features: batch size 1 differs from the image's 2")


def test_nonexistent_model(build_dir, artifacts, tmp_path) -> None:
    result = run_cli(build_dir / "bin" / "naf-ort-run", "--model", tmp_path / "missing.onnx", "--image",
                     artifacts["image1"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "model: no such file")


def test_model_that_is_not_onnx(build_dir, artifacts) -> None:
    result = run_cli(build_dir / "bin" / "naf-ort-run", "--model", artifacts["image1"], "--image",
                     artifacts["image1"], "--features", artifacts["features1"])  # fmt: skip
    _assert_clean_failure(result, "model: ONNX Runtime cannot load")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model"], "--model needs a value"),
        (["--frobnicate", "1"], "unknown argument '--frobnicate'"),
        (["--model", "m.onnx", "--image", "i.npy", "--features", "f.npy", "--threads", "two"], "--threads expects"),
        (["--model", "m.onnx", "--image", "i.npy", "--features", "f.npy", "--repeat", "0"], "--repeat expects"),
        (["--model", "m.onnx", "--image", "i.npy"], "--features is required"),
    ],
    ids=["no-value", "unknown", "threads", "repeat", "required"],
)
def test_usage_errors(build_dir, args, needle) -> None:
    _assert_clean_failure(run_cli(build_dir / "bin" / "naf-ort-run", *args), needle, code=2)


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
        "unclosed-tuple": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 32, 9, 9", data),
        "negative-dim": npy_bytes(good % "(-1, 32, 9, 9)", data),
        "overflow-shape": npy_bytes(good % "(4611686018427387904, 4611686018427387904)", data),
        "missing-key": npy_bytes("{'descr': '<f4', 'shape': %s, }" % shape, data),
        "duplicate-key": npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': %s}" % shape, data),
        "pickled-object": npy_bytes(good.replace("<f4", "|O") % "(2,)", b"\x80\x04N."),
        "huge-shape-small-file": npy_bytes(good % "(100000, 100000, 100000)", data),
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
def test_corrupt_npy_is_a_clean_error(build_dir, artifacts, corrupt_dir, name) -> None:
    result = run_cli(build_dir / "bin" / "naf-ort-run", "--model", artifacts["portable"], "--image",
                     artifacts["image1"], "--features", corrupt_dir / f"{name}.npy")  # fmt: skip
    _assert_clean_failure(result, f"features '{corrupt_dir / name}.npy'")


def test_output_is_a_valid_npy_for_numpy(build_dir, artifacts, plugin, tmp_path) -> None:
    # Writer round trip on an unusual path: numpy must read it back with the right header.
    out = tmp_path / "sub dir" / "out.npy"
    out.parent.mkdir()
    result = run_cli(build_dir / "bin" / "naf-ort-run", "--model", artifacts["portable"], "--image",
                     artifacts["image1"], "--features", artifacts["features1"], "--output", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as f:
        assert np.lib.format.read_magic(f) == (1, 0)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        assert f.tell() % 64 == 0  # data aligned like numpy's own files
    assert (shape, fortran, dtype) == ((1, CHANNELS, *OUTPUT_SIZE), False, np.dtype("<f4"))


# --- AddressSanitizer ----------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_and_npy_reader_under_asan(tmp_path_factory, model, artifacts, corrupt_dir, tmp_path) -> None:
    """The CLI (ASan + UBSan) with an ASan-built plugin inside the prebuilt, uninstrumented
    libonnxruntime: the executable links the sanitizer runtimes first, so nothing is preloaded.
    Leak checking stays on (it covers the runtime library's handle management)."""
    skip_unless_buildable(needs_ort=True, what="the C++ runtime needs building, but")
    compiler = cxx_compiler()
    if sanitizer_runtime(compiler, "libasan.so") is None or sanitizer_runtime(compiler, "libubsan.so") is None:
        pytest.skip(f"{compiler} has no AddressSanitizer/UBSan runtime (libasan.so/libubsan.so)")
    build = tmp_path_factory.mktemp("ort-runtime-asan")
    _build(build, ["naf-ort-run", "naf_npy_fuzz", "naf_onnxruntime"], "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
           "-DNAF_SANITIZE=ON", "-DNAF_BUILD_ONNXRUNTIME=ON")  # fmt: skip
    binary, asan_plugin = build / "bin" / "naf-ort-run", str(build / "lib" / "libnaf_onnxruntime.so")
    env = dict(os.environ, ASAN_OPTIONS="abort_on_error=1:detect_leaks=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")  # fmt: skip
    env.pop("LD_PRELOAD", None)

    def clean(result: subprocess.CompletedProcess) -> None:
        output = result.stdout + result.stderr
        assert "Sanitizer" not in output and "runtime error:" not in output, output[-6000:]

    # Normal runs: the instrumented CLI and plugin give the same numbers as Python.
    for name, batch, extra in (("fused", 1, ["--repeat", "2"]), ("portable", 1, []),
                               ("fused_dynamic", 2, ["--lean-memory"])):  # fmt: skip
        out = tmp_path / f"asan_{name}.npy"
        result = run_cli(binary, *cli_args(artifacts, name, batch, out, asan_plugin, *extra), env=env)
        clean(result)
        assert result.returncode == 0, result.stdout + result.stderr
        py = python_runner_output(artifacts[name], str(library("naf_onnxruntime")), batch, artifacts)
        assert rel_l2(np.load(out), py) < 1e-6

    # Every corrupt file, and the error paths of the runtime library.
    for name in CORRUPT_NAMES:
        result = run_cli(binary, "--model", artifacts["portable"], "--image", artifacts["image1"], "--features",
                         corrupt_dir / f"{name}.npy", env=env)  # fmt: skip
        clean(result)
        _assert_clean_failure(result, "features '")
    for args, needle in (
        (["--model", artifacts["fused"]], "libnaf_onnxruntime.so"),
        (["--model", tmp_path / "missing.onnx"], "model: no such file"),
        (["--model", artifacts["image1"]], "model: ONNX Runtime cannot load"),
    ):
        result = run_cli(binary, *args, "--image", artifacts["image1"], "--features", artifacts["features1"], env=env)
        clean(result)
        _assert_clean_failure(result, needle)

    # The .npy reader alone: every input in a heap buffer of exactly its size, so any read past
    # the end hits a redzone. Random mutations of valid files, then the hand-made corrupt ones.
    fuzz = build / "bin" / "naf_npy_fuzz"
    v2 = tmp_path / "v2.npy"
    with open(v2, "wb") as f:
        np.lib.format.write_array(f, np.load(artifacts["features1"]), version=(2, 0))
    for seed, path in ((1, artifacts["features1"]), (2, artifacts["image1"]), (3, v2)):
        result = subprocess.run([str(fuzz), "--mutate", str(seed), "20000", str(path)], capture_output=True,
                                text=True, env=env, timeout=600)  # fmt: skip
        clean(result)
        assert result.returncode == 0 and "rejected" in result.stdout, result.stdout + result.stderr
    result = subprocess.run([str(fuzz), *(str(p) for p in sorted(corrupt_dir.glob("*.npy")) if p.is_file()),
                             str(artifacts["features1"])], capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    clean(result)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == len(CORRUPT_NAMES), result.stdout + result.stderr
    assert all(line.startswith("error ") for line in lines[:-1]) and lines[-1].startswith("ok (1, 32, 9, 9)"), lines

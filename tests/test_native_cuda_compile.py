"""Compile check of the CUDA kernel and the TensorRT plugin, on machines without a GPU.

Configures a fresh build of the repository with the CUDA kernel and the TensorRT plugin against
the TensorRT 10.14 headers of the ``kernel-lens`` wheel (headers only, no libnvinfer), builds the
kernel for every default architecture (sm_87, sm_89, sm_90) and the plugin's compile-check
target, then builds and runs the plugin's host check (its IPluginV3 interfaces driven on the
host). Skips when nvcc, CMake or the headers are missing; a failed build is a test failure that
shows the compiler output.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def _nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and pathlib.Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _tensorrt_headers() -> pathlib.Path | None:
    """``kernel_lens/include/tensorrt`` located without importing the package (its __init__
    imports torch and triton)."""
    spec = importlib.util.find_spec("kernel_lens")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        headers = pathlib.Path(location) / "include" / "tensorrt"
        if (headers / "NvInferRuntime.h").is_file():
            return headers
    return None


def _run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} timed out after {timeout:.0f} s: {' '.join(cmd)}\n{exc.stdout or ''}\n{exc.stderr or ''}")
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{result.stdout[-12000:]}\n--- stderr ---\n{result.stderr[-12000:]}"
        )
    return result


@pytest.fixture(scope="module")
def cuda_build(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc (CUDA toolkit) not found: the CUDA kernel and TensorRT plugin cannot be compiled here")
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    headers = _tensorrt_headers()
    if headers is None:
        pytest.skip("TensorRT headers not found: pip install --no-deps kernel-lens==2.0.1 (see plugins/tensorrt/README.md)")
    build = tmp_path_factory.mktemp("cuda_build")
    configure = [
        "cmake", "-S", str(REPO), "-B", str(build),
        f"-DCMAKE_CUDA_COMPILER={nvcc}",
        "-DNAF_WITH_CUDA=ON",
        "-DNAF_BUILD_TENSORRT=ON",
        f"-DTensorRT_INCLUDE_DIR={headers}",
        # Headers only, even where some libnvinfer is installed: the check targets these headers.
        "-DTensorRT_LIBRARY=TensorRT_LIBRARY-NOTFOUND",
        "-DNAF_BUILD_OPENVINO=OFF",
        "-DNAF_BUILD_ONNXRUNTIME=OFF",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    _run(configure, "CMake configure", timeout=120)
    return build


def test_cuda_kernel_and_tensorrt_plugin_compile(cuda_build: pathlib.Path) -> None:
    jobs = str(min(2, os.cpu_count() or 1))
    result = _run(
        ["cmake", "--build", str(cuda_build), "--target", "naf_core_cuda", "naf_tensorrt_compile_check",
         "--parallel", jobs],
        "building the CUDA kernel and the TensorRT plugin",
        timeout=240,
    )
    # Every default architecture is compiled (flags live in flags.make or build.ninja).
    flag_files = [*cuda_build.rglob("naf_core_cuda.dir/flags.make"), *cuda_build.glob("build.ninja")]
    text = "".join(f.read_text() for f in flag_files)
    for arch in ("87", "89", "90"):
        assert f"sm_{arch}" in text, f"sm_{arch} missing from the CUDA compile flags"
    output = result.stdout + result.stderr
    assert "warning:" not in output.lower(), f"compiler warnings:\n{output[-12000:]}"


def test_tensorrt_plugin_host_check(cuda_build: pathlib.Path) -> None:
    _run(["cmake", "--build", str(cuda_build), "--target", "naf_tensorrt_host_check"],
         "building naf_tensorrt_host_check", timeout=240)
    exe = next(cuda_build.rglob("naf_tensorrt_host_check"), None)
    assert exe is not None and exe.is_file(), "naf_tensorrt_host_check was not produced"
    result = _run([str(exe)], "naf_tensorrt_host_check", timeout=60)
    assert result.stdout.strip().endswith("OK"), result.stdout + result.stderr

"""Locate (or build) the native libraries for the tests.

A test needing ``libnaf_core``/``libnaf_onnxruntime`` uses the library ``naf_export.native`` finds;
when there is none it builds ``<repo>/build`` with CMake. It skips only when building is
impossible here (no CMake, no C++ compiler, or for ONNX Runtime no headers and no npm); a build
that fails is a test failure.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess

import pytest

from naf_export import native

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILD_DIR = REPO / "build"


def cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def skip_unless_buildable(needs_ort: bool, what: str = "the native library is not built and") -> None:
    """Skip the calling test when CMake, a C++ compiler or (``needs_ort``) the ONNX Runtime
    headers needed to build ``what`` are missing."""
    if shutil.which("cmake") is None:
        pytest.skip(f"{what} cmake is not installed, so it cannot be built")
    if cxx_compiler() is None:
        pytest.skip(f"{what} no C++ compiler is installed, so it cannot be built")
    if needs_ort:
        cache_root = pathlib.Path(os.environ.get("NAF_EXPORT_CACHE") or pathlib.Path.home() / ".cache/naf-export")
        have_headers = bool(os.environ.get("ONNXRUNTIME_INCLUDE_DIR")) or any(
            cache_root.glob("onnxruntime-headers-*/onnxruntime_c_api.h")
        )
        if not have_headers and shutil.which("npm") is None:
            pytest.skip(f"{what} no ONNX Runtime headers are cached and npm is not installed to fetch them")


def sanitizer_runtime(compiler: str, name: str) -> str | None:
    """Absolute path of ``compiler``'s sanitizer runtime ``name`` (libasan.so, ...), or None."""
    result = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True)
    path = result.stdout.strip()
    return path if result.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def _build(target: str, needs_ort: bool) -> None:
    generator = ["-G", "Ninja"] if shutil.which("ninja") and not (BUILD_DIR / "Makefile").exists() else []
    configure = ["cmake", "-S", str(REPO), "-B", str(BUILD_DIR), *generator, "-DNAF_WITH_CUDA=OFF"]
    configure.append(f"-DNAF_BUILD_ONNXRUNTIME={'ON' if needs_ort else 'OFF'}")
    for cmd in (configure, ["cmake", "--build", str(BUILD_DIR), "--target", target]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"building {target} failed: {' '.join(cmd)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


def library(name: str) -> pathlib.Path:
    """Path of libnaf_core / libnaf_onnxruntime, building it when missing (see module doc)."""
    try:
        return native.find_library(name)
    except FileNotFoundError:
        if os.environ.get(native.LIB_DIR_ENV):
            raise  # pointed at a specific build: never substitute another one
    needs_ort = name == "naf_onnxruntime"
    skip_unless_buildable(needs_ort)
    _build(name, needs_ort)
    return native.find_library(name)


def nvcc() -> str | None:
    """The CUDA compiler: $CUDACXX, nvcc on PATH, or the default toolkit location."""
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and pathlib.Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def tensorrt_headers() -> pathlib.Path | None:
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


def run_checked(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd``; fail the test with its output tail when it fails or times out."""
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

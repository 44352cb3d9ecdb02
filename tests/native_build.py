"""Locate (or build) the native libraries for the tests.

A test needing ``libnaf_core``/``libnaf_onnxruntime`` uses the library ``naf_export.native`` finds;
when there is none it builds ``<repo>/build`` with CMake. It skips only when building is
impossible here (no CMake, no C++ compiler, or for ONNX Runtime no headers and no npm); a build
that fails is a test failure.
"""

from __future__ import annotations

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


def _skip_unless_buildable(needs_ort: bool) -> None:
    if shutil.which("cmake") is None:
        pytest.skip("native library not built and cmake is not installed, so it cannot be built")
    if cxx_compiler() is None:
        pytest.skip("native library not built and no C++ compiler is installed, so it cannot be built")
    if needs_ort:
        cache_root = pathlib.Path(os.environ.get("NAF_EXPORT_CACHE") or pathlib.Path.home() / ".cache/naf-export")
        have_headers = bool(os.environ.get("ONNXRUNTIME_INCLUDE_DIR")) or any(
            cache_root.glob("onnxruntime-headers-*/onnxruntime_c_api.h")
        )
        if not have_headers and shutil.which("npm") is None:
            pytest.skip("libnaf_onnxruntime not built: no ONNX Runtime headers cached and npm is not installed")


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
    _skip_unless_buildable(needs_ort)
    _build(name, needs_ort)
    return native.find_library(name)

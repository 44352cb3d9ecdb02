"""Compile check of the CUDA kernel, the TensorRT plugin and the TensorRT runtime backend, on
machines without a GPU.

Configures a fresh build of the repository with the CUDA kernel and the TensorRT plugin against
the TensorRT 10.14 headers of the ``kernel-lens`` wheel (headers only, no libnvinfer), builds the
kernel for every default architecture (sm_75, 80, 86, 87, 89 and 90 with PTX) and the plugin's compile-check
target, then builds and runs the plugin's host check (its IPluginV3 interfaces driven on the
host), and compiles the TensorRT backend of runtimes/ (naf::TensorRtUpsampler and its CUDA
preprocessing kernels; its host-side logic is tested without TensorRT by tests/test_runtimes.py). Skips when nvcc, CMake or the headers are missing; a failed build is a test failure that
shows the compiler output.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from native_build import REPO, nvcc, run_checked, tensorrt_headers


@pytest.fixture(scope="module")
def cuda_build(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    compiler = nvcc()
    if compiler is None:
        pytest.skip("nvcc (CUDA toolkit) not found: the CUDA kernel and TensorRT plugin cannot be compiled here")
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    headers = tensorrt_headers()
    if headers is None:
        pytest.skip("TensorRT headers not found: pip install --no-deps kernel-lens==2.0.1 (see plugins/tensorrt/README.md)")
    build = tmp_path_factory.mktemp("cuda_build")
    configure = [
        "cmake", "-S", str(REPO), "-B", str(build),
        f"-DCMAKE_CUDA_COMPILER={compiler}",
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
    run_checked(configure, "CMake configure", timeout=120)
    return build


def test_cuda_kernel_and_tensorrt_plugin_compile(cuda_build: pathlib.Path) -> None:
    jobs = str(min(2, os.cpu_count() or 1))
    result = run_checked(
        ["cmake", "--build", str(cuda_build), "--target", "naf_core_cuda", "naf_tensorrt_compile_check",
         "--parallel", jobs],
        "building the CUDA kernel and the TensorRT plugin",
        timeout=240,
    )
    # Every default architecture is compiled (flags live in flags.make or build.ninja).
    flag_files = [*cuda_build.rglob("naf_core_cuda.dir/flags.make"), *cuda_build.glob("build.ninja")]
    text = "".join(f.read_text() for f in flag_files)
    # Machine code for every default architecture (T4 ... H200), PTX for the newest only.
    for arch in ("75", "80", "86", "87", "89"):
        assert f"arch=compute_{arch},code=[sm_{arch}]" in text, f"sm_{arch} missing from the CUDA compile flags"
    assert "arch=compute_90,code=[compute_90,sm_90]" in text, "sm_90 with its PTX missing from the CUDA compile flags"
    output = result.stdout + result.stderr
    assert "warning:" not in output.lower(), f"compiler warnings:\n{output[-12000:]}"


def test_tensorrt_plugin_host_check(cuda_build: pathlib.Path) -> None:
    run_checked(["cmake", "--build", str(cuda_build), "--target", "naf_tensorrt_host_check"],
         "building naf_tensorrt_host_check", timeout=240)
    exe = next(cuda_build.rglob("naf_tensorrt_host_check"), None)
    assert exe is not None and exe.is_file(), "naf_tensorrt_host_check was not produced"
    result = run_checked([str(exe)], "naf_tensorrt_host_check", timeout=60)
    assert result.stdout.strip().endswith("OK"), result.stdout + result.stderr


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_tensorrt_plugin_device_check_builds(cuda_build: pathlib.Path) -> None:
    """The harness scripts/gpu_check.py runs on a GPU (the plugin's enqueue through IPluginV3
    without TensorRT) compiles warning-free and, without a GPU, says so and exits 3."""
    result = run_checked(["cmake", "--build", str(cuda_build), "--target", "naf_tensorrt_device_check"],
                         "building naf_tensorrt_device_check", timeout=240)
    assert "warning:" not in (result.stdout + result.stderr).lower(), result.stdout[-6000:]
    exe = next(cuda_build.rglob("naf_tensorrt_device_check"), None)
    assert exe is not None and exe.is_file()
    if torch_has_cuda():
        return  # on a GPU it runs for real in scripts/gpu_check.py
    case = cuda_build / "device_case"
    case.mkdir(exist_ok=True)
    (case / "case.txt").write_text("1 4 8 16 16 9 9 9 2 0.5\n")
    ran = subprocess.run([str(exe), str(case)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 3 and "SKIP no CUDA device" in ran.stdout, ran.stdout + ran.stderr


def test_tensorrt_runtime_backend_compiles(cuda_build: pathlib.Path) -> None:
    """runtimes/tensorrt against the same TensorRT 10.14 headers: naf::TensorRtUpsampler (engine
    loading, plugin registry, enqueueV3, CUDA graphs) and its preprocessing kernels, warning-free."""
    result = run_checked(
        ["cmake", "--build", str(cuda_build), "--target", "naf_runtime_tensorrt_compile_check", "--parallel",
         str(min(2, os.cpu_count() or 1))],
        "building the TensorRT runtime backend",
        timeout=240,
    )
    objects = {p.name for p in cuda_build.rglob("naf_runtime_tensorrt_compile_check.dir/**/*.o")}
    assert {"tensorrt_upsampler.cc.o", "engine_plan.cc.o", "preprocess.cu.o"} <= objects, objects
    output = result.stdout + result.stderr
    assert "warning:" not in output.lower(), f"compiler warnings:\n{output[-12000:]}"


def test_runtime_preprocess_gpu_check_builds(cuda_build: pathlib.Path) -> None:
    """The GPU-vs-CPU frame preprocessing check scripts/gpu_check.py runs compiles warning-free
    and, without a GPU, says so and exits 3."""
    result = run_checked(["cmake", "--build", str(cuda_build), "--target", "naf_runtime_preprocess_gpu_check"],
                         "building naf_runtime_preprocess_gpu_check", timeout=240)
    assert "warning:" not in (result.stdout + result.stderr).lower(), result.stdout[-6000:]
    exe = cuda_build / "bin" / "naf_runtime_preprocess_gpu_check"
    assert exe.is_file()
    if not torch_has_cuda():
        ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 3 and "SKIP no CUDA device" in ran.stdout, ran.stdout + ran.stderr


def test_pytorch_kernel_library_links_the_cuda_runtime_statically(cuda_build: pathlib.Path) -> None:
    """libnaf_cuda (what naf_export.cuda_attention loads for CUDA tensors) exports the kernel's C
    entry point and needs no libcudart on the loader path."""
    from naf_export.native import elf_exported_symbols

    run_checked(["cmake", "--build", str(cuda_build), "--target", "naf_cuda"], "building naf_cuda", timeout=240)
    library = cuda_build / "lib" / "libnaf_cuda.so"
    assert library.is_file()
    exported = elf_exported_symbols(library)
    assert "naf_csna_forward_cuda" in exported and not any(name.startswith("cuda") for name in exported), exported
    if shutil.which("readelf"):
        needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
        assert "libcudart" not in needed, needed

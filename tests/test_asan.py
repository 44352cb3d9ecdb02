"""The kernel tests (attention, GroupNorm+SiLU, axial RoPE) again, against an AddressSanitizer + UBSan build
of libnaf_core.

Builds a separate tree (-DNAF_SANITIZE=ON) outside the repository, so no other test can pick up
the instrumented library, then runs tests/test_kernel_core.py in a subprocess with the sanitizer
runtimes preloaded (Python itself is not instrumented). Any invalid access aborts the run.
tests/test_group_norm_core.py and tests/test_axial_rope_core.py ride along.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from native_build import REPO, cxx_compiler, sanitizer_runtime


@pytest.mark.slow
def test_kernel_tests_pass_under_asan_and_ubsan(tmp_path_factory: pytest.TempPathFactory) -> None:
    compiler = cxx_compiler()
    if shutil.which("cmake") is None or compiler is None:
        pytest.skip("cmake or a C++ compiler is missing: the sanitizer build is impossible here")
    asan, ubsan = sanitizer_runtime(compiler, "libasan.so"), sanitizer_runtime(compiler, "libubsan.so")
    if asan is None or ubsan is None:
        pytest.skip(f"{compiler} has no AddressSanitizer/UBSan runtime (libasan.so/libubsan.so)")

    build = tmp_path_factory.mktemp("asan-build")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [
        "cmake", "-S", str(REPO), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        "-DNAF_SANITIZE=ON", "-DNAF_BUILD_ONNXRUNTIME=OFF", "-DNAF_WITH_CUDA=OFF",
        f"-DCMAKE_CXX_COMPILER={compiler}",
    ]  # fmt: skip
    for cmd in (configure, ["cmake", "--build", str(build), "--target", "naf_core"]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    lib_dir = build / "lib"
    assert (lib_dir / "libnaf_core.so").is_file()

    env = dict(os.environ)
    env.update(
        NAF_EXPORT_LIB_DIR=str(lib_dir),
        LD_PRELOAD=f"{asan} {ubsan}",
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    test_files = [str(pathlib.Path(__file__).with_name(f)) for f in ("test_kernel_core.py", "test_group_norm_core.py",
                                                                         "test_axial_rope_core.py")]
    result = subprocess.run(
        # --capture=sys: sanitizer reports go to fd 2, which fd-level capture would swallow on abort.
        [sys.executable, "-m", "pytest", "-q", "--capture=sys", "-p", "no:cacheprovider", *test_files],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=1800,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "ERROR: AddressSanitizer" not in output, output[-6000:]
    assert "runtime error:" not in output, output[-6000:]  # UBSan report
    assert result.returncode == 0, output[-6000:]
    assert " passed" in output and " failed" not in output, output[-3000:]

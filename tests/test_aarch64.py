"""Jetson readiness, checked on x86: the code that runs on an Orin's CPU cross-compiles for aarch64
and runs on an Arm instruction set (qemu-aarch64) with the results computed here.

* Cross build (Debian's g++-aarch64-linux-gnu, cmake/toolchains/aarch64-jetson.cmake, CUDA off):
  the core (libnaf_core), the ONNX Runtime plugin (libnaf_onnxruntime), the runtime library
  (libnaf_runtime, libnaf_runtime_onnxruntime) and naf-run. The runtime opens libonnxruntime at
  run time; the default it tries is a stub built here for aarch64 (no aarch64 ONNX Runtime is
  downloaded).
* Under qemu-aarch64: the core's kernels (attention float32/float16, GroupNorm+SiLU float and
  8-bit, RoPE) on small cases whose inputs and reference outputs PyTorch computed on x86
  (plugins/core/tests/core_selftest.cc); the runtime's host-logic tests; the frame preprocessing
  against PyTorch's; naf-run, which loads the whole library chain and refuses the stub runtime
  cleanly (exit 3).

Skips, with the reason, where the cross compiler, its sysroot or qemu-aarch64 is missing
(scripts/setup.sh installs them where apt is available). A failing build or run is a failure.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
import torch

from naf_export.attention import cross_scale_neighborhood_attention, neighborhood_index
from naf_export.model import RotaryEmbedding2d
from naf_export.onnx_export import rope_tables
from naf_export.samples import image_to_tensor, normalize_image, resize_image
from native_build import REPO, run_checked, skip_unless_buildable
from op_feeds import group_norm_silu_reference

TRIPLE = "aarch64-linux-gnu"
SYSROOT = pathlib.Path("/usr") / TRIPLE
EM_AARCH64 = 183

STUB_ORT = r"""
/* A stand-in libonnxruntime for the aarch64 runtime: OrtGetApiBase returns a base whose GetApi
   gives NULL, so the runtime reports "no C API" instead of running a model. */
#include <stddef.h>
typedef struct OrtApi OrtApi;
typedef struct OrtApiBase {
  const OrtApi* (*GetApi)(unsigned version);
  const char* (*GetVersionString)(void);
} OrtApiBase;
static const OrtApi* get_api(unsigned version) { (void)version; return NULL; }
static const char* version_string(void) { return "0.0.0-stub"; }
static const OrtApiBase base = {get_api, version_string};
const OrtApiBase* OrtGetApiBase(void) { return &base; }
"""


def _tools() -> dict[str, str]:
    tools = {name: shutil.which(name) for name in (f"{TRIPLE}-g++", f"{TRIPLE}-gcc", "qemu-aarch64", "cmake")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"aarch64 cross check needs {', '.join(missing)} (apt-get install g++-aarch64-linux-gnu qemu-user; "
                    "scripts/setup.sh does it where apt is available)")
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        pytest.skip(f"the aarch64 sysroot {SYSROOT} (libc6-arm64-cross) is missing")
    return tools


def qemu(*args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, QEMU_LD_PREFIX=str(SYSROOT))
    return subprocess.run(["qemu-aarch64", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def cross_build(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    tools = _tools()
    skip_unless_buildable(needs_ort=True, what="the aarch64 ONNX Runtime plugin needs ONNX Runtime headers, but")
    build = tmp_path_factory.mktemp("aarch64-build")
    stub = build / "stub"
    stub.mkdir()
    (stub / "ort_stub.c").write_text(STUB_ORT)
    run_checked([tools[f"{TRIPLE}-gcc"], "-shared", "-fPIC", "-Wl,-soname,libonnxruntime.so.1", "-o",
                 str(stub / "libonnxruntime.so.1"), str(stub / "ort_stub.c")], "building the stub libonnxruntime",
                timeout=120)  # fmt: skip
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    run_checked([
        "cmake", "-S", str(REPO), "-B", str(build / "tree"), *generator, "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_TOOLCHAIN_FILE={REPO / 'cmake/toolchains/aarch64-jetson.cmake'}",
        "-DNAF_WITH_CUDA=OFF", "-DNAF_BUILD_TENSORRT=OFF", "-DNAF_BUILD_OPENVINO=OFF", "-DNAF_BUILD_ONNXRUNTIME=ON",
        "-DNAF_BUILD_RUNTIMES=ON", "-DNAF_RUNTIME_OPENVINO=OFF", "-DNAF_RUNTIME_TENSORRT=OFF",
        f"-DONNXRUNTIME_LIBRARY={stub / 'libonnxruntime.so.1'}",
    ], "configuring the aarch64 cross build", timeout=300)  # fmt: skip
    run_checked(["cmake", "--build", str(build / "tree"), "-j2", "--target", "naf_core", "naf_onnxruntime",
                 "naf_runtime_onnxruntime", "naf-run", "naf_core_selftest", "naf_runtime_unit_tests"],
                "the aarch64 cross build", timeout=1200)  # fmt: skip
    return build / "tree"


def _elf_machine(path: pathlib.Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(head[18:20], "little")


def test_cross_build_targets_aarch64(cross_build: pathlib.Path) -> None:
    for name in ("lib/libnaf_core.so", "lib/libnaf_onnxruntime.so", "lib/libnaf_runtime.so",
                 "lib/libnaf_runtime_onnxruntime.so", "bin/naf-run", "bin/naf_core_selftest"):  # fmt: skip
        assert _elf_machine(cross_build / name) == EM_AARCH64, f"{name} is not an aarch64 binary"


# --- reference cases computed on x86 ---------------------------------------------------------------
def _write(out: pathlib.Path, name: str, **tensors: np.ndarray) -> None:
    for key, value in tensors.items():
        (out / f"{name}.{key}.bin").write_bytes(np.ascontiguousarray(value).tobytes())


def _attention_case(out, name, b, dq, c, in_hw, out_hw, k, heads, dtype, seed) -> str:
    rng = np.random.default_rng(seed)
    (h, w), (big_h, big_w) = in_hw, out_hw
    q = rng.standard_normal((b, dq, big_h, big_w)).astype(dtype)
    key = rng.standard_normal((b, dq, h, w)).astype(dtype)
    v = rng.standard_normal((b, c, h, w)).astype(dtype)
    rows, cols = (neighborhood_index(n, big, k).to(torch.int32).numpy() for n, big in ((h, big_h), (w, big_w)))
    scale = (dq // heads) ** -0.5
    ref = cross_scale_neighborhood_attention(*(torch.from_numpy(t.astype(np.float32)) for t in (q, key, v)), heads, k,
                                             scale)  # fmt: skip
    _write(out, name, query=q, key=key, value=v, row_index=rows, col_index=cols, expected=ref.numpy().astype(np.float32))
    tol = 1e-6 if dtype == np.float32 else 1e-3
    tag = "f32" if dtype == np.float32 else "f16"
    return f"attention {name} {b} {dq} {c} {big_h} {big_w} {h} {w} {k} {heads} {scale!r} {tag} {tol}"


def _groupnorm_case(out, name, n, c, h, w, groups, pad, dtype, seed) -> str:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, h, w, generator=g) * 3 + 1.5).numpy().astype(dtype)
    gamma, beta = (torch.rand(c, generator=g) + 0.5).numpy().astype(dtype), torch.randn(c, generator=g).numpy().astype(dtype)
    ref = group_norm_silu_reference(x.astype(np.float32), gamma.astype(np.float32), beta.astype(np.float32), groups, pad)
    _write(out, name, x=x, gamma=gamma, beta=beta, expected=ref.numpy().astype(np.float32))
    tag, tol = ("f32", 1e-6) if dtype == np.float32 else ("f16", 2e-3)
    return f"groupnorm {name} {n} {c} {h} {w} {groups} {pad} 1e-05 {tag} {tol}"


def _qgroupnorm_case(out, name, n, c, h, w, groups, pad, dtype, seed) -> str:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, size=(n, c, h, w)).astype(dtype)
    x_scale, x_zp, y_scale, y_zp = 0.037, int(rng.integers(info.min // 2, info.max // 2)), 0.021, int(info.min) + 20
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    real = torch.from_numpy((x.astype(np.float64) - x_zp) * np.float32(x_scale))
    ref = group_norm_silu_reference(real, gamma, beta, groups, pad).numpy()
    expected = np.clip(np.rint(ref / y_scale) + y_zp, info.min, info.max).astype(dtype)
    _write(out, name, x=x, gamma=gamma, beta=beta, expected=expected)
    tag = "u8" if dtype == np.uint8 else "i8"
    return f"qgroupnorm {name} {n} {c} {h} {w} {groups} {pad} 1e-05 {tag} {x_scale} {x_zp} {y_scale} {y_zp} 1 0.001"


def _rope_case(out, name, b, d, heads, h, w, dtype, seed) -> str:
    rope = RotaryEmbedding2d(d, heads)
    x = torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(seed))
    x = x.half().float() if dtype == np.float16 else x
    with torch.no_grad():
        ref = rope(x)
    tables = {k: t.astype(dtype) for k, t in zip(("cos_h", "sin_h", "cos_w", "sin_w"), rope_tables(rope, (h, w)))}
    _write(out, name, x=x.numpy().astype(dtype), **tables, expected=ref.numpy().astype(np.float32))
    tag, tol = ("f32", 1e-6) if dtype == np.float32 else ("f16", 1e-3)
    return f"rope {name} {b} {d} {h} {w} {heads} {tag} {tol}"


@pytest.fixture(scope="module")
def kernel_cases(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Small shapes (qemu runs the kernels' portable code one instruction at a time) covering
    integer and non-integer ratios, e != dq, batch 2, K 3/5/9 and float16 storage."""
    out = tmp_path_factory.mktemp("aarch64-cases")
    lines = [
        _attention_case(out, "attn_ratio4", 1, 32, 48, (9, 9), (36, 27), 9, 2, np.float32, 0),
        _attention_case(out, "attn_nonint_b2", 2, 32, 48, (16, 15), (41, 70), 9, 4, np.float32, 1),
        _attention_case(out, "attn_k5_3heads", 1, 12, 30, (7, 8), (50, 33), 5, 3, np.float32, 2),
        _attention_case(out, "attn_f16", 1, 32, 40, (12, 10), (30, 33), 9, 2, np.float16, 3),
        _groupnorm_case(out, "gn_pad1", 1, 16, 9, 9, 8, 1, np.float32, 4),
        _groupnorm_case(out, "gn_b2_pad0", 2, 32, 13, 21, 8, 0, np.float32, 5),
        _groupnorm_case(out, "gn_f16", 1, 16, 12, 20, 4, 1, np.float16, 6),
        _qgroupnorm_case(out, "qgn_u8", 1, 16, 13, 21, 8, 1, np.uint8, 7),
        _qgroupnorm_case(out, "qgn_i8", 2, 8, 9, 17, 4, 0, np.int8, 8),
        _rope_case(out, "rope_model", 1, 256, 4, 14, 14, np.float32, 9),
        _rope_case(out, "rope_rect", 2, 32, 2, 9, 37, np.float32, 10),
        _rope_case(out, "rope_f16", 1, 32, 2, 7, 20, np.float16, 11),
    ]
    (out / "cases.txt").write_text("\n".join(lines) + "\n")
    return out


def test_core_kernels_under_qemu_match_x86_references(cross_build: pathlib.Path, kernel_cases: pathlib.Path) -> None:
    result = qemu(cross_build / "bin" / "naf_core_selftest", kernel_cases)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAIL" not in output and output.strip().splitlines()[-1] == "OK (12 cases, aarch64)", output


def test_runtime_host_logic_under_qemu(cross_build: pathlib.Path, tmp_path: pathlib.Path) -> None:
    result = qemu(cross_build / "bin" / "naf_runtime_unit_tests", tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stdout + result.stderr


@pytest.mark.parametrize(("size", "order"), [((64, 64), "rgb"), ((120, 90), "bgr"), ((37, 151), "rgb")])
def test_frame_preprocessing_under_qemu_matches_pytorch(cross_build, tmp_path, size, order) -> None:
    """The aarch64 build's frame -> normalised tensor against naf_export.samples on x86: exact for a
    frame at the model's size, within one float32 rounding step for resized ones."""
    height, width = size
    frame = np.random.default_rng(height).integers(0, 256, (height, width, 3)).astype(np.uint8)
    frame.tofile(tmp_path / "frame.u8")
    result = qemu(cross_build / "bin" / "naf_runtime_unit_tests", "--preprocess", tmp_path / "frame.u8", height, width,
                  64, 64, order, tmp_path / "out.f32")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    got = np.fromfile(tmp_path / "out.f32", np.float32).reshape(3, 64, 64)
    rgb = frame[:, :, ::-1] if order == "bgr" else frame
    ref = normalize_image(resize_image(image_to_tensor(np.ascontiguousarray(rgb)), (64, 64))).numpy()
    if size == (64, 64):
        assert np.array_equal(got, ref)
    else:
        assert np.abs(got - ref).max() <= 1e-6


def test_naf_run_starts_and_refuses_the_stub_runtime(cross_build: pathlib.Path, tmp_path: pathlib.Path) -> None:
    result = qemu(cross_build / "bin" / "naf-run", "--version")
    assert result.returncode == 0 and "backends: onnxruntime" in result.stdout, result.stdout + result.stderr
    model = tmp_path / "naf_portable.onnx"
    model.write_bytes(b"\x08\x07")  # any file: the stub runtime is refused before the model is read
    np.save(tmp_path / "image.npy", np.zeros((1, 3, 64, 64), np.float32))
    np.save(tmp_path / "features.npy", np.zeros((1, 8, 9, 9), np.float32))
    result = qemu(cross_build / "bin" / "naf-run", "--model", model, "--image", tmp_path / "image.npy", "--features",
                  tmp_path / "features.npy")  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "onnxruntime: ONNX Runtime 0.0.0-stub (" in result.stderr, result.stderr
    assert "does not provide C API version 14" in result.stderr, result.stderr

#!/usr/bin/env python3
"""GPU validation of the CUDA kernel (plugins/core/src/cross_scale_attention.cu).

Run on a machine with an NVIDIA GPU, nvcc and a CUDA build of PyTorch:

    python tests/gpu/check_cuda_kernel.py                 # correctness sweep + timing
    python tests/gpu/check_cuda_kernel.py --no-timing     # correctness only
    python tests/gpu/check_cuda_kernel.py --peak-bw-gbs 3350 --peak-tflops 67   # explicit floors

It compiles the kernel with nvcc into a small shared library (for this GPU's architecture),
calls ``naf_csna_forward_cuda`` through ctypes on PyTorch CUDA tensors, and compares with the
PyTorch reference op ``naf_export.attention.cross_scale_neighborhood_attention`` (pure PyTorch,
imported from this checkout; the native naf_export libraries are not needed):

* random shapes (divisible and non-divisible ratios, e != dq, odd channel counts, K in {3,...,9}):
  float32 rel_l2 < 1e-5, float16 storage min cosine similarity (per output channel map) > 0.999;
* arbitrary valid index tables (exercises the kernel's in-CTA fallback) against a direct gather
  reference, and out-of-range entries (NaN outputs on exactly the affected pixels, error flag);
* NaN/Inf in query, key, value and scale: NaN/Inf at exactly the reference's positions;
* timing of the release case (ratio 16: 28x28 -> 448x448, Dq=256, C=384, 4 heads, K=9, and
  ratio 32 -> 896x896) in float32 and float16, next to the memory-bandwidth and FLOP floors.

Not a pytest module (tests/gpu is not collected: no test_*.py here); exits 0 with "SKIP" when no
CUDA device is available, 1 when a check fails.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
KERNEL = REPO / "plugins" / "core" / "src" / "cross_scale_attention.cu"
INCLUDE = REPO / "plugins" / "core" / "include"

# name fragment -> (peak DRAM GB/s, peak non-tensor FP32 TFLOP/s), vendor data-sheet figures.
PEAKS = {
    "H200": (4800.0, 67.0),
    "H100 SXM": (3350.0, 67.0),
    "H100 80GB HBM3": (3350.0, 67.0),
    "H100 PCIe": (2000.0, 51.0),
    "H100 NVL": (3900.0, 60.0),
    "A100-SXM4-80GB": (2039.0, 19.5),
    "A100": (1555.0, 19.5),
    "L40S": (864.0, 91.6),
    "L4": (300.0, 30.3),
    "RTX 4090": (1008.0, 82.6),
    "Orin": (204.8, 5.3),
}


class Shape(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in (
        "batch", "query_channels", "value_channels", "out_height", "out_width",
        "in_height", "in_width", "kernel_size", "num_heads")]


def build_library(workdir: pathlib.Path, capability: tuple[int, int]) -> ctypes.CDLL:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    arch = f"{capability[0]}{capability[1]}"
    lib = workdir / "libnaf_csna_cuda.so"
    cmd = [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", f"-I{INCLUDE}",
           f"-gencode=arch=compute_{arch},code=sm_{arch}", str(KERNEL), "-o", str(lib)]
    print("building:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    dll = ctypes.CDLL(str(lib))
    dll.naf_csna_forward_cuda.restype = ctypes.c_int
    dll.naf_csna_forward_cuda.argtypes = [
        ctypes.POINTER(Shape), ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p]
    return dll


class Kernel:
    def __init__(self, dll: ctypes.CDLL, torch):
        self.dll, self.torch = dll, torch

    def __call__(self, q, k, v, heads, ri, ci, scale, out=None, flag=None):
        torch = self.torch
        b, dq_all, big_h, big_w = q.shape
        c_all, h, w = v.shape[1:]
        if out is None:
            out = torch.empty(b, c_all, big_h, big_w, dtype=v.dtype, device=v.device)
        shape = Shape(b, dq_all, c_all, big_h, big_w, h, w, ri.shape[1], heads)
        dtype = 1 if q.dtype == torch.float16 else 0
        rc = self.dll.naf_csna_forward_cuda(
            ctypes.byref(shape), dtype, q.data_ptr(), k.data_ptr(), v.data_ptr(), ri.data_ptr(),
            ci.data_ptr(), float(scale), out.data_ptr(), None if flag is None else flag.data_ptr(),
            torch.cuda.current_stream().cuda_stream)
        if rc != 0:
            raise RuntimeError(f"naf_csna_forward_cuda returned cudaError {rc}")
        return out


def rel_l2(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def cosine_min(a, b) -> float:
    a = a.double().flatten(2).flatten(0, 1)  # (B*C, H*W)
    b = b.double().flatten(2).flatten(0, 1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
    return float(cos.min())


def direct_reference(torch, q, k, v, heads, ri, ci, scale):
    """Gather formulation of DESIGN.md section 2 for arbitrary index tables (float64, small sizes)."""
    b, dq_all, big_h, big_w = q.shape
    c_all = v.shape[1]
    dq, e, kk = dq_all // heads, c_all // heads, ri.shape[1]
    q, k, v = q.double(), k.double(), v.double()
    rr = ri.long()[:, None, :, None].expand(big_h, big_w, kk, kk)
    cc = ci.long()[None, :, None, :].expand(big_h, big_w, kk, kk)
    out = torch.empty(b, c_all, big_h, big_w, dtype=torch.float64, device=q.device)
    for n in range(heads):
        kw = k[:, n * dq:(n + 1) * dq][:, :, rr, cc]  # B dq H W K K
        vw = v[:, n * e:(n + 1) * e][:, :, rr, cc]
        logits = (q[:, n * dq:(n + 1) * dq, :, :, None, None] * kw).sum(1) * scale
        p = torch.softmax(logits.reshape(b, big_h, big_w, kk * kk), -1).reshape(b, 1, big_h, big_w, kk, kk)
        out[:, n * e:(n + 1) * e] = (p * vw).sum((-1, -2))
    return out


def check_correctness(torch, kernel: Kernel, attention, rounds: int) -> bool:
    gen = torch.Generator().manual_seed(0)

    def randint(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    fixed = [  # (B, Dq, C, heads, K, h, w, H, W)
        (1, 256, 384, 4, 9, 28, 28, 448, 448),  # release case, ratio 16
        (1, 256, 384, 4, 9, 28, 28, 112, 112),  # ratio 4
        (1, 256, 384, 4, 9, 28, 28, 56, 56),    # ratio 2
        (1, 256, 1024, 4, 9, 14, 14, 224, 224),  # e = 256 (C = 1024)
        (2, 64, 96, 2, 9, 12, 9, 24, 27),
        (1, 32, 48, 4, 9, 16, 15, 41, 70),      # non-divisible ratios
        (1, 256, 384, 4, 9, 10, 11, 37, 23),
        (2, 16, 8, 2, 9, 9, 13, 30, 13),        # e < dq, W == w
        (1, 72, 60, 2, 9, 9, 9, 9, 9),          # dq = 36, smallest map
        (1, 24, 15, 3, 5, 7, 6, 50, 33),        # K = 5, e = 5
    ]
    shapes = list(fixed)
    for _ in range(rounds):
        heads = randint(1, 4)
        kk = 2 * randint(1, 4) + 1
        h, w = randint(kk, kk + 20), randint(kk, kk + 20)
        shapes.append((randint(1, 2), heads * randint(1, 48), heads * randint(1, 80), heads, kk,
                       h, w, h * randint(1, 8) + randint(0, 9), w * randint(1, 8) + randint(0, 9)))

    ok = True
    for shape in shapes:
        b, dq_all, c_all, heads, kk, h, w, big_h, big_w = shape
        q = torch.randn(b, dq_all, big_h, big_w, generator=gen).cuda()
        k = torch.randn(b, dq_all, h, w, generator=gen).cuda()
        v = torch.randn(b, c_all, h, w, generator=gen).cuda()
        ri = attention.neighborhood_index(h, big_h, kk).to(torch.int32).cuda()
        ci = attention.neighborhood_index(w, big_w, kk).to(torch.int32).cuda()
        scale = (dq_all // heads) ** -0.5
        ref = attention.cross_scale_neighborhood_attention(q, k, v, heads, kernel_size=kk, scale=None)
        flag = torch.zeros(1, dtype=torch.int32, device="cuda")
        got = kernel(q, k, v, heads, ri, ci, scale, flag=flag)
        err32 = rel_l2(got, ref)
        qh, kh, vh = q.half(), k.half(), v.half()
        ref16 = attention.cross_scale_neighborhood_attention(qh.float(), kh.float(), vh.float(), heads, kernel_size=kk)
        got16 = kernel(qh, kh, vh, heads, ri, ci, scale, flag=flag)
        cos16 = cosine_min(got16.float(), ref16)
        torch.cuda.synchronize()
        good = err32 < 1e-5 and cos16 > 0.999 and int(flag.item()) == 0
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {shape}: fp32 rel_l2 {err32:.2e}  fp16 cosine_min {cos16:.6f}"
              f"  flag {int(flag.item())}", flush=True)

    # Arbitrary valid tables (windows scattered over the map, repeated entries): in-CTA fallback.
    b, dq_all, c_all, heads, kk, h, w, big_h, big_w = 1, 32, 40, 2, 9, 12, 14, 37, 45
    q = torch.randn(b, dq_all, big_h, big_w, generator=gen).cuda()
    k = torch.randn(b, dq_all, h, w, generator=gen).cuda()
    v = torch.randn(b, c_all, h, w, generator=gen).cuda()
    ri = torch.randint(0, h, (big_h, kk), generator=gen, dtype=torch.int32).cuda()
    ci = torch.randint(0, w, (big_w, kk), generator=gen, dtype=torch.int32).cuda()
    got = kernel(q, k, v, heads, ri, ci, 0.3)
    err = rel_l2(got, direct_reference(torch, q, k, v, heads, ri, ci, 0.3))
    good = err < 1e-5
    ok &= good
    print(f"{'ok  ' if good else 'FAIL'} arbitrary index tables: rel_l2 {err:.2e}", flush=True)

    # Out-of-range entries: NaN on exactly the affected rows/columns, flag set, rest exact.
    ri = attention.neighborhood_index(h, big_h, kk).to(torch.int32).cuda()
    ci = attention.neighborhood_index(w, big_w, kk).to(torch.int32).cuda()
    bad_ri, bad_ci = ri.clone(), ci.clone()
    bad_ri[5, 3] = h
    bad_ci[17, 0] = -1
    bad_ri[30, 8] = 2**31 - 1
    flag = torch.zeros(1, dtype=torch.int32, device="cuda")
    got = kernel(q, k, v, heads, bad_ri, bad_ci, 0.3, flag=flag)
    mask = torch.zeros(big_h, big_w, dtype=torch.bool, device="cuda")
    mask[5, :] = True
    mask[30, :] = True
    mask[:, 17] = True
    ref = direct_reference(torch, q, k, v, heads, ri, ci, 0.3)
    nan_ok = bool(torch.isnan(got[:, :, mask]).all()) and not bool(torch.isnan(got[:, :, ~mask]).any())
    err = rel_l2(got[:, :, ~mask], ref[:, :, ~mask])
    good = nan_ok and int(flag.item()) == 1 and err < 1e-5
    ok &= good
    print(f"{'ok  ' if good else 'FAIL'} out-of-range indices: NaN pattern {nan_ok}, flag {int(flag.item())}, "
          f"rest rel_l2 {err:.2e}", flush=True)
    return ok


def check_nonfinite(torch, kernel: Kernel, attention) -> bool:
    """NaN/Inf inputs poison exactly what the PyTorch reference poisons (DESIGN.md section 2): a
    non-finite logit the whole pixel (every channel of its head), a non-finite value exactly the
    outputs whose window holds it, also where the tiled kernel's union of windows is wider than
    a pixel's own window (0 * inf = NaN must not leak)."""
    gen = torch.Generator().manual_seed(1)
    poisons = [("query", (0, 3, 20, 33), float("nan")), ("key", (0, 3, 7, 9), float("nan")),
               ("key", (0, 9, 7, 9), float("inf")), ("value", (0, 10, 3, 4), float("inf")),
               ("value", (0, 100, 13, 14), float("nan")), ("scale", None, float("nan"))]
    ok = True
    for shape in ((1, 256, 384, 4, 28, 28, 448, 448), (1, 16, 24, 2, 20, 22, 47, 60)):
        b, dq_all, c_all, heads, h, w, big_h, big_w = shape
        for name, where, bad in poisons:
            if name == "value" and where[1] >= c_all:
                continue
            t = {"query": torch.randn(b, dq_all, big_h, big_w, generator=gen),
                 "key": torch.randn(b, dq_all, h, w, generator=gen), "value": torch.randn(b, c_all, h, w, generator=gen)}
            scale = (dq_all // heads) ** -0.5
            if name == "scale":
                scale = bad
            else:
                t[name][where] = bad
            ref = attention.cross_scale_neighborhood_attention(t["query"], t["key"], t["value"], heads, 9, scale)
            ri = attention.neighborhood_index(h, big_h, 9).to(torch.int32).cuda()
            ci = attention.neighborhood_index(w, big_w, 9).to(torch.int32).cuda()
            got = kernel(*(x.cuda() for x in t.values()), heads, ri, ci, scale).cpu()
            poisoned = ~torch.isfinite(ref)
            same = bool(torch.equal(~torch.isfinite(got), poisoned)) and bool(torch.equal(torch.isnan(got), torch.isnan(ref)))
            err = rel_l2(got[~poisoned], ref[~poisoned]) if not poisoned.all() else 0.0
            good = same and err < 1e-5
            ok &= good
            print(f"{'ok  ' if good else 'FAIL'} non-finite {name}={bad} {shape}: same NaN/Inf positions {same}, "
                  f"{int(poisoned.sum())} poisoned, rest rel_l2 {err:.2e}", flush=True)
    return ok


def measured_copy_bandwidth(torch) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write), a realistic memory ceiling."""
    x = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    return 2 * x.numel() * 10 / (start.elapsed_time(end) * 1e-3) / 1e9


def time_release_case(torch, kernel: Kernel, attention, peak_bw: float | None, peak_tflops: float | None) -> None:
    name = torch.cuda.get_device_name()
    for key, (bw, tf) in PEAKS.items():
        if key.lower() in name.lower():
            peak_bw = peak_bw or bw
            peak_tflops = peak_tflops or tf
            break
    copy_bw = measured_copy_bandwidth(torch)
    print(f"\n{name}: measured copy bandwidth {copy_bw:.0f} GB/s; data-sheet peak "
          f"{peak_bw or '?'} GB/s, {peak_tflops or '?'} FP32 TFLOP/s (non-tensor)")
    b, dq_all, c_all, heads, kk, h, w = 1, 256, 384, 4, 9, 28, 28
    for big in (448, 896):
        for dtype in (torch.float32, torch.float16):
            q = torch.randn(b, dq_all, big, big, device="cuda", dtype=dtype)
            k = torch.randn(b, dq_all, h, w, device="cuda", dtype=dtype)
            v = torch.randn(b, c_all, h, w, device="cuda", dtype=dtype)
            ri = attention.neighborhood_index(h, big, kk).to(torch.int32).cuda()
            ci = attention.neighborhood_index(w, big, kk).to(torch.int32).cuda()
            out = torch.empty(b, c_all, big, big, device="cuda", dtype=dtype)
            for _ in range(5):
                kernel(q, k, v, heads, ri, ci, 0.125, out=out)
            times = []
            for _ in range(30):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                kernel(q, k, v, heads, ri, ci, 0.125, out=out)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            ms = sorted(times)[len(times) // 2]
            size = q.element_size()
            moved = (q.numel() + out.numel() + k.numel() + v.numel()) * size + (ri.numel() + ci.numel()) * 4
            dq, e = dq_all // heads, c_all // heads
            flops = b * big * big * heads * kk * kk * (2 * dq + 2 * e + 5)  # logits, P.V, softmax
            floors = [f"copy-bandwidth floor {moved / (copy_bw * 1e9) * 1e3:.3f} ms"]
            if peak_bw:
                floors.append(f"peak-bandwidth floor {moved / (peak_bw * 1e9) * 1e3:.3f} ms")
            if peak_tflops:
                floors.append(f"FP32 FLOP floor {flops / (peak_tflops * 1e12) * 1e3:.3f} ms")
            print(f"ratio {big // h:2d} ({big}x{big}) {str(dtype).replace('torch.', ''):8s}: {ms:.3f} ms median  "
                  f"[{moved / 1e6:.0f} MB moved, {flops / 1e9:.1f} GFLOP -> {moved / ms / 1e6:.0f} GB/s, "
                  f"{flops / ms / 1e9:.1f} TFLOP/s]; " + ", ".join(floors), flush=True)
            del q, k, v, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="random shapes besides the fixed ones")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--peak-bw-gbs", type=float, default=None, help="DRAM bandwidth for the floor")
    parser.add_argument("--peak-tflops", type=float, default=None, help="FP32 (non-tensor) TFLOP/s for the floor")
    args = parser.parse_args()

    try:
        import torch
    except ImportError:
        print("SKIP: PyTorch is not installed")
        return 0
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    if shutil.which("nvcc") is None and not pathlib.Path("/usr/local/cuda/bin/nvcc").exists():
        print("SKIP: nvcc not found")
        return 0
    sys.path.insert(0, str(REPO))
    from naf_export import attention  # pure PyTorch reference op

    with tempfile.TemporaryDirectory() as tmp:
        dll = build_library(pathlib.Path(tmp), torch.cuda.get_device_capability())
        kernel = Kernel(dll, torch)
        ok = check_correctness(torch, kernel, attention, args.rounds)
        ok &= check_nonfinite(torch, kernel, attention)
        if not args.no_timing:
            time_release_case(torch, kernel, attention, args.peak_bw_gbs, args.peak_tflops)
    print("\nALL CHECKS PASSED" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

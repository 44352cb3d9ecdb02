#!/usr/bin/env python3
"""The GPU path on a GPU, in one run: the CUDA kernel, the TensorRT plugin without TensorRT, and
NAF in PyTorch on CUDA, checked against the PyTorch reference op and timed.

    python scripts/gpu_check.py --out gpu-results              # on a CUDA machine, < 8 minutes
    python scripts/gpu_check.py --out /tmp/dry --dry-run-cpu   # the script itself, on a CPU

Writes OUT/gpu_check.json (every row) and OUT/gpu_check.md (tables) and exits 0 when every
correctness row passed, 1 otherwise. It builds what it needs with nvcc for the GPU in use:
libnaf_cuda (the kernel, naf_export.cuda_attention.build_kernel_library) and the plugin's device
harness (plugins/tensorrt/tests/plugin_device_check.cpp, against TensorRT headers: --tensorrt-include,
$TensorRT_INCLUDE_DIR, <repo>/.gpu_deps/tensorrt (a copy of the kernel-lens wheel's include/tensorrt,
for machines without the wheel) or the kernel-lens wheel). Sections (each runs on its own; a failure is a
row, the run goes on):

* correctness: the kernel through torch.ops.naf_export.cross_scale_attention (and raw ctypes calls
  where the test needs a pointer the op would not give) against naf_export.attention.attend on the
  same GPU with TF32 off. float32 rel_l2 < 1e-5; float16 storage rel_l2 < 2e-3 against the
  reference on the same float16-rounded inputs. Divisible and non-divisible ratios 2..32, e != dq,
  B = 3, C in {128, 384, 768, 1024}, every kernel path (tiled; in-CTA fallback from arbitrary index
  tables, both dtypes; the simple whole-pixel kernel for windows too large for shared memory,
  confirmed by the kernel name the profiler saw), large logits, an output pointer one element
  off alignment, W % 4 != 0, out-of-range index entries (NaN exactly on the affected pixels and
  the error flag set), NaN/Inf inputs (non-finite exactly where the reference has them), two
  runs bit-identical;
* compute-sanitizer memcheck and racecheck on tiny shapes of every path (skipped with the reason
  when the tool is missing or cannot attach);
* the TensorRT plugin through IPluginV3 without TensorRT (float32, float16, non-default streams,
  two threads) against the reference;
* the op's first call inside CUDA-graph capture (a fresh process), then replay;
* the C++ runtime's frame preprocessing on the GPU against its CPU path, bit for bit;
* timing: 20 launches per event pair, C x ratio x dtype, next to the memory floor (bytes the op
  must move / the measured device-to-device copy rate) and the FLOP rate;
* NAF end to end on CUDA (C = 384, 28x28 features, 448x448 image) at ratios 2..32, through the
  kernel and through the pure PyTorch op: latency, peak device memory, their agreement;
* experimental kernel variants (built with their -D flags, off by default in CMake) against the
  default kernel in the same run: correctness, and time per launch as a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from naf_export import cuda_attention, native  # noqa: E402
from naf_export.attention import attend, neighborhood_index  # noqa: E402

F32_BOUND, F16_BOUND = 1e-5, 2e-3
RELEASE_GPU = {16: (56.0, 1.79), 32: (268.0, 7.1)}  # ms, GB: the release's published figures


# --- helpers --------------------------------------------------------------------------------------
def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def make_case(device, b, dq, c, heads, h, w, out_h, out_w, k=9, seed=0, tables="naf"):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, dq, out_h, out_w, generator=gen)
    key = torch.randn(b, dq, h, w, generator=gen)
    v = torch.randn(b, c, h, w, generator=gen)
    if tables == "naf":
        rows, cols = neighborhood_index(h, out_h, k), neighborhood_index(w, out_w, k)
    else:  # arbitrary valid tables: windows scattered over the map (the in-CTA fallback)
        rows = torch.randint(0, h, (out_h, k), generator=gen)
        cols = torch.randint(0, w, (out_w, k), generator=gen)
    return [t.to(device) for t in (q, key, v, rows, cols)]


def op(q, k, v, rows, cols, heads, scale):
    return torch.ops.naf_export.cross_scale_attention(q, k, v, rows, cols, heads, scale)


def launcher(lib, q, k, v, rows32, cols32, heads, scale, out_ptr, flag_ptr=None):
    """One launch of naf_csna_forward_cuda on the current stream, its arguments prepared once (so
    timing measures the kernel); int32 tables, all tensors kept alive by the caller."""
    b, dq, out_h, out_w = q.shape
    shape = native.AttentionShape(b, dq, v.shape[1], out_h, out_w, k.shape[2], k.shape[3], rows32.shape[1], heads)
    args = (ctypes.byref(shape), 1 if q.dtype == torch.float16 else 0, q.data_ptr(), k.data_ptr(), v.data_ptr(),
            rows32.data_ptr(), cols32.data_ptr(), float(scale), out_ptr, flag_ptr)  # fmt: skip

    def launch():
        rc = lib.naf_csna_forward_cuda(*args, ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
        if rc != 0:
            raise RuntimeError(f"naf_csna_forward_cuda returned CUDA error {rc}")

    return launch


def raw_forward(lib, q, k, v, rows, cols, heads, scale, out_ptr, flag_ptr=None):
    """naf_csna_forward_cuda on explicit pointers (the op never passes an unaligned output), waited for."""
    # Held until the kernel is done: a temporary's memory would be reused before the kernel runs.
    rows32, cols32 = rows.int().contiguous(), cols.int().contiguous()
    launcher(lib, q, k, v, rows32, cols32, heads, scale, out_ptr, flag_ptr)()
    torch.cuda.synchronize()
    del rows32, cols32


def kernel_names(fn) -> list[str]:
    """Names of the CUDA kernels `fn` launched, as the profiler saw them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events() if "csna" in e.name})


class Report:
    def __init__(self, out: pathlib.Path, dry_run: bool):
        self.out, self.data = out, {"dry_run": dry_run, "sections": {}}

    def row(self, section: str, **fields) -> dict:
        self.data["sections"].setdefault(section, []).append(fields)
        status = fields.get("passed")
        print(f"[{section}] {'PASS' if status else 'FAIL' if status is False else 'INFO'} "
              + ", ".join(f"{k}={v}" for k, v in fields.items() if k != "passed"), flush=True)  # fmt: skip
        return fields

    def failed(self) -> list[dict]:
        return [r for rows in self.data["sections"].values() for r in rows if r.get("passed") is False]

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        lines = [f"# GPU check: {self.data.get('device', '?')}", "",
                 f"{self.data.get('date', '')}, `{self.data.get('command', '')}`", ""]  # fmt: skip
        if self.data["dry_run"]:
            lines += ["**Dry run on a CPU: the script's own check, not a GPU result.**", ""]
        for section, rows in self.data["sections"].items():
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines += [f"## {section}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            for r in rows:
                cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        (self.out / "gpu_check.md").write_text("\n".join(lines))


def section(report: Report, name: str, fn, *args) -> None:
    started = time.perf_counter()
    try:
        fn(report, *args)
    except Exception as error:  # a broken section is a failed row; the others still run
        report.row(name, case="section aborted", error=f"{type(error).__name__}: {error}", passed=False)
        traceback.print_exc()
    report.row("timing of this script", part=name, seconds=round(time.perf_counter() - started, 1))
    report.write()  # what is done is on disk, whatever happens to the rest of the run


# --- correctness ----------------------------------------------------------------------------------
def compare(report, name, q, k, v, rows, cols, heads, scale=None, dtype=torch.float32):
    scale = (q.shape[1] // heads) ** -0.5 if scale is None else scale
    q, k, v = (t.to(dtype) for t in (q, k, v))
    got = op(q, k, v, rows, cols, heads, scale)
    ref = attend(q.float(), k.float(), v.float(), rows.long(), cols.long(), heads, scale)
    error = rel_l2(got.float(), ref)
    bound = F16_BOUND if dtype == torch.float16 else F32_BOUND
    return report.row("correctness", case=name, dtype=str(dtype).replace("torch.", ""),
                      shape=f"B{q.shape[0]} Dq{q.shape[1]} C{v.shape[1]} {k.shape[2]}x{k.shape[3]}->"
                            f"{q.shape[2]}x{q.shape[3]} heads{heads} K{rows.shape[1]}",
                      rel_l2=error, bound=bound, passed=bool(error < bound))  # fmt: skip


def correctness(report: Report, device: str, quick: bool) -> None:
    dtypes = (torch.float32, torch.float16)
    cases = [  # name, (B, Dq, C, heads, h, w, H, W)
        ("release ratio 16", (1, 256, 384, 4, 28, 28, 448, 448)),
        ("ratio 2", (1, 256, 384, 4, 28, 28, 56, 56)),
        ("non-divisible 28->197 (W % 4 != 0)", (1, 256, 384, 4, 28, 28, 197, 197)),
        ("non-divisible 23x31->100x133", (2, 64, 96, 4, 23, 31, 100, 133)),
        ("e != dq, B = 3", (3, 64, 128, 2, 14, 14, 56, 58)),
        ("C 128", (1, 256, 128, 4, 28, 28, 224, 224)),
        ("C 768", (1, 256, 768, 4, 28, 28, 224, 224)),
        ("C 1024", (1, 256, 1024, 4, 28, 28, 224, 224)),
        ("ratio 32", (1, 256, 384, 4, 28, 28, 896, 896)),
        ("ratio 7", (1, 256, 384, 4, 28, 28, 196, 196)),
    ]
    if quick:
        cases = [(n, (b, min(dq, 32), min(c, 48), heads, h, w, min(hh, 3 * h), min(ww, 3 * w)))
                 for n, (b, dq, c, heads, h, w, hh, ww) in cases[:5]]  # fmt: skip
    for name, (b, dq, c, heads, h, w, out_h, out_w) in cases:
        inputs = make_case(device, b, dq, c, heads, h, w, out_h, out_w)
        for dtype in dtypes:
            compare(report, name, *inputs, heads, dtype=dtype)
    # The in-CTA fallback: arbitrary valid tables make tile unions larger than the capacity.
    inputs = make_case(device, 2, 64, 96, 4, 20, 24, 80, 96, tables="random")
    for dtype in dtypes:
        compare(report, "arbitrary tables (in-CTA fallback)", *inputs, 4, dtype=dtype)
    # The simple whole-pixel kernel: a 41x41 window of 256-channel keys cannot fit shared memory.
    inputs = make_case(device, 1, 256, 64, 1, 41, 41, 82, 82, k=41)
    for dtype in dtypes:
        row = compare(report, "K 41, one 256-channel head (whole-pixel kernel)", *inputs, 1, dtype=dtype)
        if device == "cuda":
            names = kernel_names(lambda: op(*(t.to(dtype) for t in inputs[:3]), *inputs[3:], 1, 0.0625))
            seen = {"passed": any("naive" in n for n in names)} if names else {"note": "profiler saw no kernels"}
            report.row("correctness", case="whole-pixel kernel ran", dtype=row["dtype"], kernels=" ".join(names), **seen)
    # Large logits: softmax of logits around 1e3 must not overflow.
    q, k, v, rows, cols = make_case(device, 1, 64, 64, 2, 16, 16, 64, 64)
    for dtype in dtypes:
        compare(report, "large logits (scale 30)", q * 4, k * 4, v, rows, cols, 2, scale=30.0, dtype=dtype)



def raw_pointer_cases(report: Report, device: str) -> None:
    """Cases that need pointers the op never passes (a misaligned output, an error flag) and may
    leave a sticky CUDA error if the kernel is wrong: run after the timing and end-to-end rows."""
    dtypes = (torch.float32, torch.float16)
    lib = cuda_attention.cuda_library()
    q, k, v, rows, cols = make_case(device, 1, 64, 96, 4, 20, 20, 100, 100)  # W % 4 == 0: vector stores
    ref = attend(q, k, v, rows, cols, 4, 0.25)
    for dtype in dtypes:
        qq, kk, vv = (t.to(dtype).contiguous() for t in (q, k, v))
        ref_d = attend(qq.float(), kk.float(), vv.float(), rows, cols, 4, 0.25)
        buffer = torch.full((ref.numel() + 1,), float("nan"), dtype=dtype, device=device)
        raw_forward(lib, qq, kk, vv, rows, cols, 4, 0.25, buffer.data_ptr() + buffer.element_size())
        error = rel_l2(buffer[1:].view_as(ref).float(), ref_d)
        bound = F16_BOUND if dtype == torch.float16 else F32_BOUND
        report.row("raw pointers", case="output pointer one element off", dtype=str(dtype)[6:], rel_l2=error,
                   bound=bound, passed=bool(error < bound and torch.isnan(buffer[0]).item()))  # fmt: skip
        first, second = op(qq, kk, vv, rows, cols, 4, 0.25), op(qq, kk, vv, rows, cols, 4, 0.25)
        report.row("raw pointers", case="two runs bit-identical", dtype=str(dtype)[6:],
                   passed=bool(torch.equal(first, second)))  # fmt: skip
        # Out-of-range entries: NaN exactly on the pixels whose window holds one, flag set.
        bad_rows = rows.clone()
        bad_rows[[3, 50], 4] = 20  # == h: one past the end
        bad_cols = cols.clone()
        bad_cols[7, 0] = -1
        flag = torch.zeros(1, dtype=torch.int32, device=device)
        out = torch.empty_like(ref, dtype=dtype)
        raw_forward(lib, qq, kk, vv, bad_rows, bad_cols, 4, 0.25, out.data_ptr(), flag.data_ptr())
        expected = torch.zeros(ref.shape[2:], dtype=torch.bool, device=device)
        expected[[3, 50], :] = True
        expected[:, 7] = True
        nan = torch.isnan(out).all(dim=1)[0]
        finite_ok = rel_l2(out.float()[..., ~expected], ref_d[..., ~expected]) < (F16_BOUND if dtype == torch.float16
                                                                                   else F32_BOUND)  # fmt: skip
        report.row("raw pointers", case="out-of-range index entries", dtype=str(dtype)[6:], flag=int(flag.item()),
                   passed=bool(torch.equal(nan, expected) and flag.item() == 1 and finite_ok
                               and not torch.isnan(out[..., ~expected]).any()))  # fmt: skip
        # Non-finite inputs: non-finite exactly where the reference (exact-window path) has them.
        for where, value in (("query", float("nan")), ("key", float("inf")), ("value", float("nan")),
                             ("value", float("inf"))):  # fmt: skip
            tensors = {"query": qq.clone(), "key": kk.clone(), "value": vv.clone()}
            target = tensors[where]
            target[0, 0, target.shape[2] // 2, target.shape[3] // 3] = value
            got = op(tensors["query"], tensors["key"], tensors["value"], rows, cols, 4, 0.25).float()
            want = attend(*(tensors[n].float() for n in ("query", "key", "value")), rows, cols, 4, 0.25)
            same = torch.equal(torch.isnan(got), torch.isnan(want)) and torch.equal(torch.isinf(got), torch.isinf(want))
            report.row("raw pointers", case=f"{value} in {where}", dtype=str(dtype)[6:],
                       nonfinite=int((~torch.isfinite(want)).sum()), passed=bool(same))  # fmt: skip


# --- compute-sanitizer, CUDA graphs: child processes ---------------------------------------------
def tiny_run() -> None:
    """Every kernel path on tiny shapes (what the sanitizers watch)."""
    for dtype in (torch.float32, torch.float16):
        for args, k in (((1, 16, 24, 2, 9, 10, 20, 21), 9), ((2, 32, 48, 4, 11, 13, 37, 50), 9),
                        ((1, 256, 16, 1, 21, 21, 42, 42), 21),  # too large for shared memory: whole-pixel kernel
                        ((1, 16, 512, 1, 9, 9, 18, 18), 9)):  # e = 512: phase 2 in several value chunks
            b, dq, c, heads, h, w, out_h, out_w = args
            for tables in ("naf", "random"):
                q, key, v, rows, cols = make_case("cuda", b, dq, c, heads, h, w, out_h, out_w, k=k, tables=tables)
                op(q.to(dtype), key.to(dtype), v.to(dtype), rows, cols, heads, 0.3)
            v[0, 0, h // 2, w // 2] = float("nan")  # phase 2's exact path for non-finite values
            op(q.to(dtype), key.to(dtype), v.to(dtype), rows, cols, heads, 0.3)
    torch.cuda.synchronize()
    print("tiny run done")


def graph_run() -> None:
    """The op's first call in this process happens inside CUDA-graph capture; then replay. Then the
    same after a warm-up call (what works when the first-call capture does not)."""
    result = {}
    for warm in (False, True):
        try:
            result.update({f"{'warmed' if warm else 'first call'}: {k}": v for k, v in _captured_run(warm).items()})
        except Exception as error:  # noqa: BLE001 - reported as a failed row by the parent
            result[f"{'warmed' if warm else 'first call'}: error"] = f"{type(error).__name__}: {error}"[:300]
    try:
        result.update({f"naf forward: {k}": v for k, v in _captured_model().items()})
    except Exception as error:  # noqa: BLE001
        result["naf forward: error"] = f"{type(error).__name__}: {error}"[:300]
    print(json.dumps(result))


def _captured_model() -> dict:
    """NAF's whole forward (kernel attention) captured after a warm-up call, then replayed."""
    from naf_export.checkpoint import load_naf

    model = load_naf(None).eval().cuda()
    image = torch.randn(1, 3, 224, 224, device="cuda")
    features = torch.randn(1, 384, 14, 14, device="cuda")
    with torch.inference_mode():
        eager = model(image, features, (112, 112))
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.cuda.graph(graph):
            captured = model(image, features, (112, 112))
        graph.replay()
        torch.cuda.synchronize()
    return {"replay matches eager": bool(torch.equal(captured, eager))}


def _captured_run(warm: bool) -> dict:
    q, k, v, rows, cols = make_case("cuda", 1, 64, 96, 4, 28, 28, 112, 112)
    rows, cols = rows.int(), cols.int()
    if warm:
        op(q, k, v, rows, cols, 4, 0.25)
        torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        with torch.cuda.graph(graph):
            captured = op(q, k, v, rows, cols, 4, 0.25)
    graph.replay()
    torch.cuda.synchronize()
    first = captured.clone()
    q.mul_(0.5)  # replay reads the captured buffers: new inputs, new output
    graph.replay()
    torch.cuda.synchronize()
    eager = op(q, k, v, rows, cols, 4, 0.25)
    torch.cuda.synchronize()
    return {"replay matches eager": bool(torch.equal(captured, eager)),
            "new inputs, new output": bool(not torch.equal(first, captured))}  # fmt: skip


def child(mode: str, env: dict, timeout: int, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """This script in `mode`, in its own process group: a timeout kills the tool and its Python."""
    import signal

    cmd = [*(prefix or []), sys.executable, str(pathlib.Path(__file__).resolve()), f"--child={mode}"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(cmd, process.returncode, out, err)


def sanitizers(report: Report, env: dict, remaining) -> None:
    tool = shutil.which("compute-sanitizer") or next(
        (str(p) for p in (pathlib.Path("/usr/local/cuda/bin/compute-sanitizer"),) if p.is_file()), None)
    if tool is None:
        report.row("compute-sanitizer", tool="-", note="skipped: compute-sanitizer not found")
        return
    # No caching allocator: out-of-bounds accesses inside a cached segment would go unseen.
    env = {**env, "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    for index, check in enumerate(("memcheck", "racecheck")):
        limit = max(30, int(remaining() / (2 - index)) - 5)
        result = None
        # Only the project's kernels (csna_*) instrumented, when this tool version takes the filter.
        for extra in (["--kernel-name", "kns=csna"], []):
            try:
                result = child("tiny", env, limit, [tool, f"--tool={check}", *extra])
            except subprocess.TimeoutExpired:
                result = None
                break
            if "SUMMARY" in result.stdout + result.stderr:
                break
        if result is None:
            report.row("compute-sanitizer", tool=check, note=f"skipped: did not finish in {limit} s")
            continue
        text = result.stdout + result.stderr
        summary = next((line.strip(" =") for line in text.splitlines() if "SUMMARY" in line), "")
        if not summary:
            last = text.strip().splitlines()[-1][:200] if text.strip() else "no output"
            report.row("compute-sanitizer", tool=check, note=f"could not run the program under the tool: {last}")
            continue
        clean = " 0 errors" in summary or " 0 hazards" in summary
        report.row("compute-sanitizer", tool=check, summary=summary, finished="tiny run done" in text,
                   passed=bool(clean and "tiny run done" in text))  # fmt: skip


def cuda_graph(report: Report, env: dict) -> None:
    result = child("graph", env, 180)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        report.row("cuda graph", case="first call inside capture", error=(result.stderr or result.stdout)[-300:],
                   passed=False)  # fmt: skip
        return
    data = json.loads(lines[-1])
    for phase in ("first call", "warmed", "naf forward"):
        fields = {k.split(": ", 1)[1]: v for k, v in data.items() if k.startswith(phase + ": ")}
        report.row("cuda graph", case=f"{phase} inside capture, replay", **fields,
                   passed=bool(fields) and all(v is True for v in fields.values()))


# --- the TensorRT plugin without TensorRT ---------------------------------------------------------
def tensorrt_headers(given: str | None) -> pathlib.Path | None:
    for candidate in (given, os.environ.get("TensorRT_INCLUDE_DIR"), str(REPO / ".gpu_deps" / "tensorrt")):
        if candidate and (pathlib.Path(candidate) / "NvInferRuntime.h").is_file():
            return pathlib.Path(candidate)
    import importlib.util

    spec = importlib.util.find_spec("kernel_lens")  # the wheel's headers, without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = pathlib.Path(location) / "include" / "tensorrt"
        if (path / "NvInferRuntime.h").is_file():
            return path
    return None


def tensorrt_plugin(report: Report, device: str, headers: pathlib.Path | None, nvcc: str | None, arch: str,
                    work: pathlib.Path) -> None:
    if headers is None or nvcc is None:
        report.row("tensorrt plugin", note="skipped: " + ("no TensorRT headers (--tensorrt-include)" if headers is None
                                                           else "no nvcc"))  # fmt: skip
        return
    exe = work / "naf_tensorrt_device_check"
    sources = [REPO / "plugins/tensorrt/tests/plugin_device_check.cpp",
               REPO / "plugins/tensorrt/src/cross_scale_attention_plugin.cpp",
               REPO / "plugins/tensorrt/src/plugin_registration.cpp", REPO / "plugins/core/src/cross_scale_attention.cu"]
    cmd = [nvcc, "-std=c++17", "-O2", f"-gencode=arch=compute_{arch},code=sm_{arch}", "-isystem", str(headers),
           f"-I{REPO / 'plugins/core/include'}", f"-I{REPO / 'plugins/tensorrt/src'}", "-o", str(exe),
           *map(str, sources), "-lpthread"]  # fmt: skip
    built = subprocess.run(cmd, capture_output=True, text=True)
    if built.returncode != 0:
        report.row("tensorrt plugin", case="build", error=built.stderr[-500:], passed=False)
        return
    report.row("tensorrt plugin", case="harness built against", headers=str(headers), passed=True)
    b, dq, c, heads, h, w, out_h, out_w = 2, 64, 96, 4, 23, 28, 100, 112
    q, k, v, rows, cols = make_case("cpu", b, dq, c, heads, h, w, out_h, out_w)
    case_dir = work / "trt_case"
    case_dir.mkdir(exist_ok=True)
    scale = 0.25
    (case_dir / "case.txt").write_text(f"{b} {dq} {c} {out_h} {out_w} {h} {w} 9 {heads} {scale}\n")
    for name, t in (("query", q), ("key", k), ("value", v)):
        t.float().contiguous().numpy().tofile(case_dir / f"{name}.f32")
    rows.int().numpy().tofile(case_dir / "row_index.i32")
    cols.int().numpy().tofile(case_dir / "col_index.i32")
    result = subprocess.run([str(exe), str(case_dir)], capture_output=True, text=True, timeout=120)
    for line in result.stdout.splitlines():
        if line.startswith(("PASS", "FAIL")):
            report.row("tensorrt plugin", case=line[5:], passed=line.startswith("PASS"))
    if result.returncode == 3 or device != "cuda":
        report.row("tensorrt plugin", note="harness skipped: " + (result.stdout.strip() or "no CUDA device"))
        return
    if result.returncode != 0:
        report.row("tensorrt plugin", case="harness exit status", status=result.returncode,
                   error=(result.stderr or result.stdout)[-300:], passed=False)  # fmt: skip
        return
    for dtype in (torch.float32, torch.float16):
        name = str(dtype)[6:]
        qq, kk, vv = (t.to(dtype).float() for t in (q, k, v))
        ref = attend(qq, kk, vv, rows, cols, heads, scale)
        out = torch.from_numpy(__import__("numpy").fromfile(case_dir / f"out_{name}.f32", dtype="float32"))
        error = rel_l2(out.view_as(ref), ref)
        bound = F16_BOUND if dtype == torch.float16 else F32_BOUND
        report.row("tensorrt plugin", case="enqueue output vs PyTorch reference", dtype=name, rel_l2=error,
                   bound=bound, passed=bool(error < bound))  # fmt: skip


# --- the C++ runtime's frame preprocessing on the GPU ----------------------------------------------
def runtime_preprocessing(report: Report, device: str, nvcc: str | None, arch: str, work: pathlib.Path) -> None:
    """runtimes/tensorrt/src/preprocess.cu against runtimes/src/preprocess.cc, bit for bit
    (runtimes/tests/preprocess_gpu_check.cc): the part of the TensorRT backend that runs without
    TensorRT."""
    if nvcc is None:
        report.row("runtime preprocessing", note="skipped: no nvcc")
        return
    exe = work / "naf_runtime_preprocess_gpu_check"
    cmd = [nvcc, "-std=c++17", "-O2", f"-gencode=arch=compute_{arch},code=sm_{arch}", "-Xcompiler=-ffp-contract=off",
           f"-I{REPO / 'runtimes/src'}", f"-I{REPO / 'runtimes/tensorrt/src'}", f"-I{REPO / 'plugins/core/src'}",
           "-o", str(exe), str(REPO / "runtimes/tests/preprocess_gpu_check.cc"),
           str(REPO / "runtimes/tensorrt/src/preprocess.cu"), str(REPO / "runtimes/src/preprocess.cc")]  # fmt: skip
    built = subprocess.run(cmd, capture_output=True, text=True)
    if built.returncode != 0:
        report.row("runtime preprocessing", case="build", error=built.stderr[-500:], passed=False)
        return
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    if result.returncode == 3 or device != "cuda":
        report.row("runtime preprocessing", note="skipped: " + (result.stdout.strip() or "no CUDA device"))
        return
    for line in result.stdout.splitlines():
        if line.startswith(("PASS", "FAIL")):
            report.row("runtime preprocessing", case=line[5:], passed=line.startswith("PASS"))
    if result.returncode != 0:
        report.row("runtime preprocessing", case="exit status", status=result.returncode,
                   error=(result.stderr or result.stdout)[-300:], passed=False)  # fmt: skip


# --- timing ---------------------------------------------------------------------------------------
def copy_rate(device: str) -> float:
    """Device-to-device copy rate in bytes/s (read + write), the memory floor's denominator."""
    src = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / time_call(device, lambda: dst.copy_(src), 10)


def time_call(device: str, fn, launches: int) -> float:
    """Seconds per call: `launches` calls between one event pair, median of 3 pairs."""
    fn()
    if device != "cuda":
        start = time.perf_counter()
        for _ in range(launches):
            fn()
        return (time.perf_counter() - start) / launches
    samples = []
    for _ in range(3):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(launches):
            fn()
        end.record()
        end.synchronize()
        samples.append(begin.elapsed_time(end) / 1000 / launches)
    return sorted(samples)[1]


def timing(report: Report, device: str, quick: bool) -> None:
    rate = copy_rate(device)
    report.row("timing", case="device-to-device copy", gb_per_s=rate / 1e9)
    channels, ratios, launches = ((128, 384, 768, 1024), (2, 4, 8, 16, 32), 20) if not quick else ((32,), (2,), 2)
    low, dq, heads, k = (28, 256, 4, 9) if not quick else (10, 16, 2, 9)
    for c in channels:
        for ratio in ratios:
            q, key, v, rows, cols = make_case(device, 1, dq, c, heads, low, low, low * ratio, low * ratio)
            rows, cols = rows.int(), cols.int()  # the kernel's own table type: no conversion per call
            for dtype in (torch.float32, torch.float16):
                qq, kk, vv = (t.to(dtype) for t in (q, key, v))
                seconds = time_call(device, lambda: op(qq, kk, vv, rows, cols, heads, 0.125), launches)
                size = qq.element_size()
                moved = (qq.numel() + kk.numel() + vv.numel() + c * (low * ratio) ** 2) * size
                flops = 2 * (low * ratio) ** 2 * heads * k * k * (dq + c) // heads
                floor = moved / rate
                report.row("timing", C=c, ratio=ratio, dtype=str(dtype)[6:], ms=seconds * 1e3, floor_ms=floor * 1e3,
                           x_floor=seconds / floor, tflops=flops / seconds / 1e12)  # fmt: skip
            del q, key, v


def end_to_end(report: Report, device: str, quick: bool) -> None:
    from naf_export.checkpoint import load_naf

    model = load_naf(None).eval().to(device)  # seeded stand-in weights with the release's shapes
    gen = torch.Generator().manual_seed(1)
    image_size, feature = ((448, 448), 28) if not quick else ((64, 64), 10)
    image = torch.randn(1, 3, *image_size, generator=gen).to(device)
    features = torch.randn(1, 384, feature, feature, generator=gen).to(device)
    for ratio in ((2, 4, 8, 16, 32) if not quick else (2,)):
        size = (feature * ratio,) * 2
        outputs = {}
        for mode in ("kernel", "reference"):
            os.environ[cuda_attention.MODE_ENV] = mode
            for precision in ("float32", "float16 autocast"):
                autocast = torch.autocast(device, dtype=torch.float16) if precision != "float32" and device == "cuda" \
                    else contextlib.nullcontext()  # fmt: skip
                with torch.inference_mode(), autocast:
                    if device == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    run = lambda: model(image, features, size)  # noqa: E731
                    outputs[(mode, precision)] = run().float().cpu()
                    seconds = time_call(device, run, 5 if not quick else 1)
                    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
                release = RELEASE_GPU.get(ratio, (None, None))
                report.row("naf end to end", ratio=ratio, attention=mode, precision=precision, ms=seconds * 1e3,
                           peak_gb=peak, release_ms=release[0], release_gb=release[1])  # fmt: skip
        os.environ[cuda_attention.MODE_ENV] = "auto"
        for precision, bound in (("float32", F32_BOUND), ("float16 autocast", F16_BOUND)):
            error = rel_l2(outputs[("kernel", precision)], outputs[("reference", precision)])
            report.row("naf end to end", ratio=ratio, case=f"kernel vs PyTorch op, {precision}", rel_l2=error,
                       bound=bound, passed=bool(error < bound))  # fmt: skip


# --- experimental kernel variants ---------------------------------------------------------------
VARIANTS = {"padded staging": ("NAF_CSNA_PADDED_STAGING=1",)}  # CMake NAF_CUDA_PADDED_STAGING


def variants(report: Report, nvcc: str, arch: str, work: pathlib.Path) -> None:
    """Each experimental variant next to the default kernel, in this run: correctness against the
    reference, and time per launch as a ratio to the default's (the decision to make it default)."""
    default = cuda_attention.cuda_library()
    for name, defines in VARIANTS.items():
        lib = cuda_attention.load_kernel_library(cuda_attention.build_kernel_library(arch, nvcc, work / "cache", defines))
        for c in (128, 384, 768, 1024):
            q, k, v, rows, cols = make_case("cuda", 1, 256, c, 4, 28, 28, 448, 448)
            rows32, cols32 = rows.int(), cols.int()
            for dtype in (torch.float32, torch.float16):
                qq, kk, vv = (t.to(dtype) for t in (q, k, v))
                ref = attend(qq.float(), kk.float(), vv.float(), rows, cols, 4, 0.125)
                out_default, out_variant = (torch.empty_like(ref, dtype=dtype) for _ in range(2))
                run_default = launcher(default, qq, kk, vv, rows32, cols32, 4, 0.125, out_default.data_ptr())
                run_variant = launcher(lib, qq, kk, vv, rows32, cols32, 4, 0.125, out_variant.data_ptr())
                seconds = {"default": [], "variant": []}
                for _ in range(3):  # alternated, so drift hits both alike
                    seconds["default"].append(time_call("cuda", run_default, 20))
                    seconds["variant"].append(time_call("cuda", run_variant, 20))
                torch.cuda.synchronize()
                error = rel_l2(out_variant.float(), ref)
                bound = F16_BOUND if dtype == torch.float16 else F32_BOUND
                t_default, t_variant = sorted(seconds["default"])[1], sorted(seconds["variant"])[1]
                report.row("experimental variants", variant=name, C=c, ratio=16, dtype=str(dtype)[6:], rel_l2=error,
                           bound=bound, default_ms=t_default * 1e3, variant_ms=t_variant * 1e3,
                           variant_over_default=t_variant / t_default, passed=bool(error < bound))  # fmt: skip


# --- main -----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--tensorrt-include", help="folder with NvInferRuntime.h (TensorRT 10 headers)")
    parser.add_argument("--dry-run-cpu", action="store_true", help="run the script's logic on the CPU, tiny sizes")
    parser.add_argument("--skip", nargs="*", default=[], choices=("sanitizer", "tensorrt", "graph", "preprocessing", "timing", "e2e", "raw",
                                                              "variants"))
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="wall-clock budget: later sections are skipped, saying so, when it runs out (default 420)")
    parser.add_argument("--child", choices=("tiny", "graph"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.child:
        (tiny_run if args.child == "tiny" else graph_run)()
        return 0
    if args.out is None:
        parser.error("--out: a folder for the results is required")
    started_all = time.perf_counter()
    dry = args.dry_run_cpu
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); --dry-run-cpu checks the script")
        return 3
    device = "cpu" if dry else "cuda"
    report = Report(args.out, dry)
    report.data.update(date=time.strftime("%Y-%m-%d %H:%M"), command=" ".join(sys.argv), torch=torch.__version__,
                       device=torch.cuda.get_device_name() if not dry else "CPU (dry run)")  # fmt: skip
    nvcc = cuda_attention.nvcc_path()
    work = pathlib.Path(tempfile.mkdtemp(prefix="naf-gpu-check-"))
    arch = "".join(map(str, torch.cuda.get_device_capability())) if not dry else "90"
    env = dict(os.environ)
    if not dry:
        started = time.perf_counter()
        if nvcc is None:
            report.row("build", error="nvcc not found", passed=False)
            report.write()
            return 1
        try:
            library = cuda_attention.build_kernel_library(arch, nvcc, work / "cache")
        except Exception as error:  # a toolchain failure is the run's one result: keep it
            report.row("build", arch=f"sm_{arch}", error=f"{type(error).__name__}: {error}"[-2000:], passed=False)
            report.write()
            return 1
        env[native.LIB_DIR_ENV] = os.environ[native.LIB_DIR_ENV] = str(library.parent)
        env[cuda_attention.MODE_ENV] = os.environ[cuda_attention.MODE_ENV] = "kernel"
        cuda_attention.cuda_library.cache_clear()
        report.row("build", library=str(library), arch=f"sm_{arch}", seconds=round(time.perf_counter() - started, 1))
    deadline = started_all + args.budget_s

    def remaining() -> float:
        return deadline - time.perf_counter()

    # Most valuable first; the sanitizers (slow: every kernel instrumented) get what is left.
    plan = [("correctness", None, correctness, (device, dry), 0),
            ("tensorrt plugin", "tensorrt", tensorrt_plugin,
             (device, tensorrt_headers(args.tensorrt_include), nvcc, arch, work), 30),
            ("cuda graph", "graph", cuda_graph, (env,), 30),
            ("runtime preprocessing", "preprocessing", runtime_preprocessing, (device, nvcc, arch, work), 30),
            ("timing", "timing", timing, (device, dry), 60),
            ("naf end to end", "e2e", end_to_end, (device, dry), 60),
            ("raw pointers", "raw", raw_pointer_cases, (device,), 20),
            ("experimental variants", "variants", variants, (nvcc, arch, work), 40),
            ("compute-sanitizer", "sanitizer", sanitizers, (env, remaining), 60)]  # fmt: skip
    for name, switch, fn, fn_args, needs in plan:
        if switch in args.skip or (device != "cuda" and name in ("cuda graph", "compute-sanitizer", "raw pointers",
                                                                  "experimental variants")):
            continue
        if remaining() < needs:
            report.row(name, note=f"skipped: {remaining():.0f} s of the {args.budget_s:.0f} s budget left")
            continue
        section(report, name, fn, *fn_args)
    report.write()
    failed = report.failed()
    print(f"gpu_check: {len(failed)} failed row(s); {args.out / 'gpu_check.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

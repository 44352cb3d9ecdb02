"""Measure one backend at one configuration; print a JSON line. Run as a fresh process.

Usage: python -m naf_export.bench.worker --backend pytorch --ratio 16 [--channels 384]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a worker would report at
    # least the RSS of the parent that spawned it (the bench driver, after exporting/calibrating).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _time(run: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _pytorch_runner(args: argparse.Namespace) -> Callable[[], object]:
    import torch

    from naf_export.checkpoint import load_naf
    from naf_export.samples import sample_batch

    torch.set_num_threads(args.threads)
    model = load_naf(args.checkpoint)
    image, features = sample_batch((args.image, args.image), (args.features, args.features), args.channels)
    out = args.features * args.ratio

    def run() -> object:
        with torch.inference_mode():
            return model(image, features, (out, out))

    return run


def _attention_runner(args: argparse.Namespace) -> Callable[[], object]:
    """The PyTorch attention op alone at the protocol's shapes (query 256 channels)."""
    import torch

    from naf_export.attention import cross_scale_neighborhood_attention

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    out = args.features * args.ratio
    q = torch.randn(1, 256, out, out, generator=gen)
    k = torch.randn(1, 256, args.features, args.features, generator=gen)
    v = torch.randn(1, args.channels, args.features, args.features, generator=gen)

    def run() -> object:
        with torch.inference_mode():
            return cross_scale_neighborhood_attention(q, k, v, 4)

    return run


def _native_attention_runner(args: argparse.Namespace) -> Callable[[], object]:
    """The C++ CPU kernel alone (libnaf_core through ctypes), same shapes as pytorch-attention.
    The output buffer is reused and 64-byte aligned, as a runtime's arena would be."""
    import numpy as np
    import torch

    from naf_export.attention import neighborhood_index
    from naf_export.native import aligned_empty, cross_scale_attention_cpu

    rng = np.random.default_rng(0)
    out = args.features * args.ratio
    q = rng.standard_normal((1, 256, out, out), dtype=np.float32)
    k = rng.standard_normal((1, 256, args.features, args.features), dtype=np.float32)
    v = rng.standard_normal((1, args.channels, args.features, args.features), dtype=np.float32)
    rows = neighborhood_index(args.features, out).to(torch.int32).numpy()
    result = aligned_empty((1, args.channels, out, out), np.float32)  # 64-byte aligned, as ORT's arena
    return lambda: cross_scale_attention_cpu(q, k, v, rows, rows, 4, 0.125, args.threads, out=result)


def _onnxruntime_runner(args: argparse.Namespace) -> Callable[[], object]:
    """An exported model in ONNX Runtime; inputs from --inputs (.npz). No torch work here, so
    the process's peak RSS is the runtime's own (plus the Python interpreter)."""
    import numpy as np

    from naf_export.runners.onnxruntime import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(args.model, threads=args.threads, lean_memory=args.lean_memory)
    data = np.load(args.inputs)
    image, feats = data["image"], data["features"]
    return lambda: runner(image, feats)


def _openvino_runner(args: argparse.Namespace) -> Callable[[], object]:
    """An OpenVINO IR (--model, written by the parent) on CPU with the extension; inputs from
    --inputs (.npz). The runner's "auto" precision hint, as ``naf-export --target openvino``:
    float32 math for fp32, bfloat16 for bf16 IRs, the CPU default (bf16 where supported) for INT8's float
    parts."""
    import numpy as np

    from naf_export.runners.openvino import OpenVinoRunner

    runner = OpenVinoRunner(args.model, threads=args.threads)
    data = np.load(args.inputs)
    image, feats = data["image"], data["features"]
    return lambda: runner(image, feats)


RUNNERS: dict[str, Callable[[argparse.Namespace], Callable[[], object]]] = {
    "pytorch": _pytorch_runner,
    "pytorch-attention": _attention_runner,
    "native-attention": _native_attention_runner,
    "onnxruntime": _onnxruntime_runner,
    "openvino": _openvino_runner,
    "openvino-bf16": _openvino_runner,
    "openvino-int8": _openvino_runner,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True, choices=sorted(RUNNERS))
    parser.add_argument("--ratio", type=int, required=True)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--image", type=int, default=448)
    parser.add_argument("--features", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--model", help="ONNX file (onnxruntime backend) or OpenVINO IR .xml (openvino backends)")
    parser.add_argument("--inputs", help=".npz with image and features (onnxruntime, openvino backends)")
    parser.add_argument("--lean-memory", action="store_true", help="onnxruntime: CPU memory arena off")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message="NAF has UNTRAINED weights")
    run = RUNNERS[args.backend](args)
    times = _time(run, args.repeats, args.warmup)
    result = {
        "backend": args.backend,
        "ratio": args.ratio,
        "channels": args.channels,
        "output": args.features * args.ratio,
        "threads": args.threads,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "times_ms": times,
        "peak_rss_mb": _peak_rss_mb(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

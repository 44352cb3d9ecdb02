"""The C++ attention kernel alone (libnaf_core) over the shapes of plugins/core/README.md's table.

    python scripts/bench_attention_kernel.py

B=1, Dq=256, C=384, heads=4, K=9; the output buffer is reused, as a runtime's arena is, and
64-byte aligned (what runtime allocators give), except in the "unaligned" row, which shows the
kernel's ordinary-store path (a buffer 4 bytes off the boundary). Prints a Markdown table of the
median time over ``--runs`` calls after one warm-up, and the nominal GFLOP/s.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

# (label, low-res side h, output side H, storage dtype, aligned output)
CASES = [
    ("28 -> 448 (ratio 16)", 28, 448, np.float32, True),
    ("28 -> 448 (ratio 16), unaligned output", 28, 448, np.float32, False),
    ("28 -> 448 (ratio 16), float16", 28, 448, np.float16, True),
    ("28 -> 500 (non-integer ratio)", 28, 500, np.float32, True),
    ("37 -> 518 (ratio 14)", 37, 518, np.float32, True),
    ("28 -> 56", 28, 56, np.float32, True),
    ("28 -> 112", 28, 112, np.float32, True),
    ("28 -> 224", 28, 224, np.float32, True),
]


def measure(h: int, big: int, dtype: type, aligned: bool, runs: int, threads: int) -> float:
    import torch

    from naf_export.attention import neighborhood_index
    from naf_export.native import aligned_empty, cross_scale_attention_cpu

    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 256, big, big), dtype=np.float32).astype(dtype)
    k = rng.standard_normal((1, 256, h, h), dtype=np.float32).astype(dtype)
    v = rng.standard_normal((1, 384, h, h), dtype=np.float32).astype(dtype)
    rows = neighborhood_index(h, big).to(torch.int32).numpy()
    shape = (1, 384, big, big)
    if aligned:
        out = aligned_empty(shape, dtype)
    else:
        raw = aligned_empty((int(np.prod(shape)) * np.dtype(dtype).itemsize + 4,), np.uint8)
        out = raw[4:].view(dtype).reshape(shape)
    times = []
    for _ in range(runs + 1):  # the first call is warm-up (page faults of the output)
        start = time.perf_counter()
        cross_scale_attention_cpu(q, k, v, rows, rows, 4, 0.125, threads, out=out)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs: expected a positive integer")
    print(f"threads={args.threads}, median of {args.runs} runs\n")
    print("| h, w -> H, W | GFLOP | median ms | GFLOP/s |\n|---|---|---|---|")
    for label, h, big, dtype, aligned in CASES:
        gflop = 2 * big * big * 4 * 9 * 9 * (64 + 96) / 1e9
        seconds = measure(h, big, dtype, aligned, args.runs, args.threads)
        print(f"| {label} | {gflop:.1f} | {seconds * 1e3:.1f} | {gflop / seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

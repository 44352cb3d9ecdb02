#!/usr/bin/env python3
"""Peak memory of whole ``naf-export`` runs against the estimate that refuses impossible sizes.

Each configuration runs ``naf-export`` (default target: ONNX Runtime with the plugin, one sample
image, one timed run) in a fresh process and reads that process's peak RSS; next to it, the
estimate of :func:`naf_export.sizing.estimate_peak_bytes`, which must stay above the measurement
(it refuses sizes that cannot fit before anything is allocated, and warns when they exceed the
memory free now).

    python scripts/bench_run_memory.py [--json docs/bench_run_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from naf_export.config import ExportConfig  # noqa: E402
from naf_export.sizing import encoder_size, estimate_peak_bytes  # noqa: E402

# (image, features, channels, output): each term of the estimate dominates somewhere.
CONFIGS = [
    ((448, 448), (28, 28), 384, (56, 56)),    # ratio 2: the default run
    ((448, 448), (28, 28), 384, (112, 112)),  # encoder at 448^2
    ((448, 448), (28, 28), 384, (448, 448)),  # ratio 16
    ((896, 896), (28, 28), 64, (224, 224)),   # encoder at 896^2
    ((112, 112), (28, 28), 384, (896, 896)),  # output maps: 384 x 896^2
    ((112, 112), (28, 28), 1024, (448, 448)),  # many channels
]


def child_peak_rss(cmd: list[str]) -> tuple[int, float]:
    """Peak RSS in bytes of a child process (via wait4's rusage) and its wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return usage.ru_maxrss * 1024, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    print("| image | features | C | output | encoder | measured peak RSS MB | estimate MB | estimate / measured | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for image, feats, channels, output in CONFIGS:
        config = ExportConfig(image, feats, channels, output)
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "naf_export.cli", "--out", out, "--samples", "1", "--runs", "1",
                   "--image-size", *map(str, image), "--feature-size", *map(str, feats), "--channels", str(channels),
                   "--output-size", *map(str, output)]
            peak, seconds = child_peak_rss(cmd)
        estimate = estimate_peak_bytes(config)
        enc = encoder_size(config)
        row = {"image": image, "features": feats, "channels": channels, "output": output, "encoder": enc,
               "peak_rss_mb": round(peak / 2**20), "estimate_mb": round(estimate / 2**20),
               "ratio": round(estimate / peak, 2), "seconds": round(seconds, 1)}
        rows.append(row)
        print(f"| {image[0]}² | {feats[0]}² | {channels} | {output[0]}² | {enc[0]}² | {row['peak_rss_mb']} | "
              f"{row['estimate_mb']} | {row['ratio']:.2f} | {row['seconds']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                                         "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    low = min(r["ratio"] for r in rows)
    print(f"\nlowest estimate / measured: {low:.2f} (must stay >= 1)")
    return 0 if low >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""naf-run (the C++ runtime's CLI) on the release benchmark's shape at ratio 4, per backend and input
kind, in one run: latency and peak RSS as naf-run reports them, as a Markdown table.

    cmake -S . -B build -DNAF_BUILD_RUNTIMES=ON && cmake --build build -j --target naf-run
    python scripts/bench_naf_run.py [--naf-run build/bin/naf-run] [--threads 2] [--repeat 7]

Artifacts: what `naf-export --target onnxruntime` / `--target openvino` write for image 448x448,
features 384x28x28, output 112x112 (untrained stand-in weights: speed does not depend on them).
Inputs: a normalised float32 image `.npy`, and a 1280x720 BGR uint8 frame (resized and normalised
inside naf-run).
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--naf-run", type=pathlib.Path, default=REPO / "build" / "bin" / "naf-run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if not args.naf_run.is_file():
        parser.error(f"--naf-run: {args.naf_run} does not exist (build the CMake target naf-run)")

    from naf_export.checkpoint import load_naf
    from naf_export.config import ExportConfig
    from naf_export.targets import ExportRequest, run_target

    work = pathlib.Path(tempfile.mkdtemp(prefix="naf-run-bench-"))
    model = load_naf(None).eval()
    config = ExportConfig((448, 448), (28, 28), 384, (112, 112))
    artifacts = {}
    for target, name in (("onnxruntime", "naf_fused.onnx"), ("openvino", "naf_fused_openvino_fp32.xml")):
        run_target(target, ExportRequest(model=model, config=config, out=work / target, samples=1, runs=1))
        artifacts[target] = work / target / name
    rng = np.random.default_rng(0)
    np.save(work / "image.npy", rng.standard_normal((1, 3, 448, 448)).astype(np.float32))
    np.save(work / "frame.npy", rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8))
    np.save(work / "features.npy", rng.standard_normal((1, 384, 28, 28)).astype(np.float32))

    rows = []
    for backend, artifact in artifacts.items():
        for label, image, extra in (("float32 image .npy", "image.npy", []),
                                    ("1280x720 BGR frame", "frame.npy", ["--channel-order", "bgr"])):  # fmt: skip
            cmd = [str(args.naf_run), "--model", str(artifact), "--image", str(work / image), "--features",
                   str(work / "features.npy"), "--output", str(work / "out.npy"), "--threads", str(args.threads),
                   "--repeat", str(args.repeat), *extra]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            latency = re.search(r"latency: median ([0-9.]+) ms", result.stdout)
            rss = re.search(r"peak RSS: ([0-9.]+) MiB", result.stdout)
            version = re.search(r"backend \S+ ([0-9.]+)", result.stdout)
            rows.append((f"{backend} {version.group(1) if version else ''}", artifact.name, label,
                         float(latency.group(1)), float(rss.group(1))))  # fmt: skip
            print(f"{rows[-1]}", file=sys.stderr, flush=True)
    print(f"naf-run --threads {args.threads} --repeat {args.repeat}; image 448x448, features 384x28x28, output 112x112\n")
    print("| backend | artifact | input | median ms | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for backend, artifact, label, ms, rss in rows:
        print(f"| {backend} | `{artifact}` | {label} | {ms:.0f} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

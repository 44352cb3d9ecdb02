"""Where ONNX Runtime spends its time on the fused NAF model: per operator type, from ONNX Runtime's
own profiler.

    python scripts/profile_ort.py --ratio 16

Exports the fused model as ``--target onnxruntime`` writes it (seeded stand-in weights), runs it ``--runs`` times after one warm-up
with profiling on, and prints a Markdown table of the median time per run for each operator type
(the attention node, Conv, the layout reorders ORT inserts, the GroupNorm/SiLU elementwise ops, ...).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratio", type=int, default=16, help="output = 28 * ratio (features 28x28, C=384)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder-ops", choices=("fused", "onnx"), default="fused",
                        help="fused: naf::GroupNormSiLU nodes, as --target onnxruntime writes; onnx: standard ops")
    parser.add_argument("--int8", action="store_true",
                        help="profile the INT8 model naf-export --int8 writes (calibrated on the bundled set)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.ratio < 1:
        parser.error("--runs and --ratio: expected positive integers")
    import onnxruntime as ort

    from naf_export.native import ort_library_path

    with tempfile.TemporaryDirectory() as tmp:
        size = str(28 * args.ratio)
        target = ["--target", "onnxruntime", "--int8", "--samples", "1", "--runs", "1"] if args.int8 else ["--target", "onnx"]
        subprocess.run([sys.executable, "-m", "naf_export.cli", *target, "--output-size", size, size,
                        "--encoder-ops", args.encoder_ops, "--out", tmp], check=True, capture_output=True)
        model_file = os.path.join(tmp, "naf_fused_int8.onnx" if args.int8 else "naf_fused.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.enable_mem_pattern = False  # as naf-export's runner
        options.register_custom_ops_library(ort_library_path())
        session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {i.name: rng.standard_normal(i.shape, dtype=np.float32) for i in session.get_inputs()}
        session.run(None, feeds)  # warm-up, not profiled
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort_profile")
        session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)  # the profiled session's own first run (arena growth) is dropped below
        for _ in range(args.runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())

    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if len(runs) < args.runs + 1:
        raise SystemExit(f"profile: expected {args.runs + 1} model_run events, found {len(runs)}")
    first_end = runs[0]["ts"] + runs[0]["dur"]  # skip everything up to the end of the first run
    per_type: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_end:
            per_type[e["args"].get("op_name", "?")] += e["dur"] / 1e3 / args.runs
    total = float(np.median([r["dur"] / 1e3 for r in runs[1:]]))
    print(f"ratio {args.ratio}: median run {total:.0f} ms ({args.runs} runs, {args.threads} threads)\n")
    print("| operator type | ms per run | share |\n|---|---|---|")
    for op, ms in sorted(per_type.items(), key=lambda kv: -kv[1]):
        print(f"| {op} | {ms:.0f} | {ms / total:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

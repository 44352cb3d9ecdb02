#!/usr/bin/env python3
"""Accuracy of every CPU target x precision: export, then `naf-export validate` on the bundled sample
images, one row per artifact, with the two commands that made it.

    python scripts/bench_accuracy.py [--ratio 16] [--bound 0.01] [--json docs/bench_accuracy.json]

Rows: ONNX Runtime fp32 / fp16 / int8 / accuracy-targeted int8 (--max-rel-l2 BOUND), OpenVINO fp32 /
fp16 / bf16 (where the CPU has it) / int8 / accuracy-targeted int8. Official protocol sizes (image
448², features 384 x 28², output 28·ratio); untrained stand-in weights unless --checkpoint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = [  # (target, precision flags, artifact file name)
    ("onnxruntime", [], "naf_fused.onnx"),
    ("onnxruntime", ["--fp16"], "naf_fused_fp16.onnx"),
    ("onnxruntime", ["--int8"], "naf_fused_int8.onnx"),
    ("onnxruntime", ["--int8", "--max-rel-l2", "BOUND"], "naf_fused_int8.onnx"),
    ("openvino", [], "naf_fused_openvino_fp32.xml"),
    ("openvino", ["--fp16"], "naf_fused_openvino_fp16.xml"),
    ("openvino", ["--bf16"], "naf_fused_openvino_bf16.xml"),
    ("openvino", ["--int8"], "naf_fused_openvino_int8.xml"),
    ("openvino", ["--int8", "--max-rel-l2", "BOUND"], "naf_fused_openvino_int8.xml"),
]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "naf_export.cli", *cmd], capture_output=True, text=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratio", type=int, default=16)
    p.add_argument("--bound", default="0.01", help="--max-rel-l2 of the accuracy-targeted INT8 rows")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    size = str(28 * args.ratio)
    rows = []
    print(f"ratio {args.ratio} (output {size}²), image 448², features 384 x 28², bundled sample images; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| target | precision | size MB | rel_l2 (worst) | cosine mean | cosine min | PSNR dB (worst) | k-means mIoU | "
          "float layers | command |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for index, (target, flags, artifact) in enumerate(ROWS):
            flags = [args.bound if f == "BOUND" else f for f in flags]
            out, report_dir = Path(tmp) / f"out{index}", Path(tmp) / f"validate{index}"
            export = ["--target", target, *flags, "--output-size", size, size, "--samples", "1", "--runs", "1",
                      "--out", str(out)] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
            made = _run(export)
            label = " ".join(flags) or "fp32"
            command = f"`naf-export --target {target} {' '.join(flags)} --output-size {size} {size}`".replace("  ", " ")
            if made.returncode != 0:
                reason = made.stderr.strip().splitlines()[-1] if made.stderr.strip() else f"exit {made.returncode}"
                print(f"| {target} | {label} | | | | | | | | not available: {reason} |", flush=True)
                rows.append({"target": target, "precision": label, "error": reason})
                continue
            checked = _run(["validate", str(out / artifact), "--no-pictures", "--out", str(report_dir)]
                           + (["--checkpoint", args.checkpoint] if args.checkpoint else []))
            if checked.returncode not in (0, 1):
                raise SystemExit(f"validate failed for {target} {label}: {checked.stderr[-2000:]}")
            overall = json.loads((report_dir / "report.json").read_text())["overall"]
            export_report = json.loads((out / "report.json").read_text())
            kept = (export_report.get("quantization") or {}).get("float_layers")
            files = [out / artifact] + ([(out / artifact).with_suffix(".bin")] if artifact.endswith(".xml") else [])
            size_mb = sum(f.stat().st_size for f in files) / 1e6
            row = {"target": target, "precision": label, "size_mb": round(size_mb, 2), **overall,
                   "float_layers": kept}
            rows.append(row)
            print(f"| {target} | {label} | {size_mb:.1f} | {overall['rel_l2']:.3g} | {overall['cosine_mean']:.6f} | "
                  f"{overall['cosine_min']:.6f} | {overall['psnr']:.1f} | {overall['miou']:.4f} | "
                  f"{'' if kept is None else len(kept)} | {command} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"ratio": args.ratio, "bound": args.bound, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

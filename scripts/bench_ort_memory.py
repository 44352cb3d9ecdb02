"""ONNX Runtime memory settings A/B: time and peak RSS of the fused NAF model per setting.

    python scripts/bench_ort_memory.py --ratios 2 16

Each (setting, ratio) runs in a fresh process (peak RSS = that process's VmHWM): ONNX Runtime's
defaults, memory pattern off (naf-export's default), arena off, both off (``--lean-memory``).
Prints a Markdown table; seeded stand-in weights (speed and memory do not depend on them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "ONNX Runtime defaults (arena + memory pattern)": {"enable_mem_pattern": True, "enable_cpu_mem_arena": True},
    "memory pattern off (naf-export default)": {"enable_mem_pattern": False, "enable_cpu_mem_arena": True},
    "arena off only": {"enable_mem_pattern": True, "enable_cpu_mem_arena": False},
    "memory pattern and arena off (--lean-memory)": {"enable_mem_pattern": False, "enable_cpu_mem_arena": False},
}

_CHILD = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
from naf_export.native import ort_library_path
model, settings, runs, threads = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
for key, value in settings.items():
    setattr(options, key, value)
options.register_custom_ops_library(ort_library_path())
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
shapes = {i.name: i.shape for i in session.get_inputs()}
rng = np.random.default_rng(0)
feeds = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}
times = []
for _ in range(runs):
    start = time.perf_counter()
    session.run(None, feeds)
    times.append((time.perf_counter() - start) * 1e3)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
print(json.dumps({"median_ms": float(np.median(times[1:])), "peak_rss_mb": int(hwm) / 1024}))
"""


def _export(ratio: int, directory: Path) -> Path:
    out = directory / f"r{ratio}"
    size = str(28 * ratio)
    subprocess.run([sys.executable, "-m", "naf_export.cli", "--target", "onnx", "--encoder-ops", "fused",
                    "--output-size", size, size, "--out", str(out)], check=True, capture_output=True)  # as --target onnxruntime
    return out / "naf_fused.onnx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratios", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--runs", type=int, default=6, help="runs per process; the first is warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs: expected at least 2 (the first run is warm-up)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in args.ratios:
            model = _export(ratio, Path(tmp))
            for name, settings in SETTINGS.items():
                done = subprocess.run([sys.executable, "-c", _CHILD, str(model), json.dumps(settings),
                                       str(args.runs), str(args.threads)], check=True, capture_output=True, text=True)
                results.append({"setting": name, "ratio": ratio, **json.loads(done.stdout.strip().splitlines()[-1])})
                print(f"ratio {ratio}: {name}: {results[-1]['median_ms']:.0f} ms, "
                      f"{results[-1]['peak_rss_mb']:.0f} MB", file=sys.stderr)
    print("| setting | ratio | median ms | peak RSS MB |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['setting']} | {r['ratio']} | {r['median_ms']:.0f} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark NAF backends on the official protocol; print a Markdown table, optionally JSON.

    naf-export bench --backends pytorch onnxruntime --ratios 2 4 8 16 [--plot bench.png] [--markdown bench.md]

Backends: ``pytorch`` (eager model), ``pytorch-attention`` / ``native-attention`` (the attention op alone, PyTorch / C++ kernel),
``onnxruntime`` (fused ONNX + plugin), ``onnxruntime-portable`` (standard ops only),
``onnxruntime-onnx-encoder`` (fused attention, image encoder in standard operators: ``--encoder-ops onnx``),
``onnxruntime-lean`` (fused, CPU memory arena off), ``onnxruntime-fp16`` / ``onnxruntime-int8`` (fused, converted / QDQ-quantized on the bundled calibration set).
``openvino`` / ``openvino-bf16`` / ``openvino-int8`` (OpenVINO IR + extension: float32, bfloat16 inference, or NNCF
INT8 on the bundled calibration set).
Each measurement runs in a fresh process; the FLOP floor uses this machine's measured float32
matrix-product rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from tqdm import tqdm

from .flops import attention_flops, measure_matmul_gflops, naf_flops

BACKENDS = ("pytorch", "pytorch-attention", "native-attention", "onnxruntime", "onnxruntime-onnx-encoder",
            "onnxruntime-portable", "onnxruntime-lean", "onnxruntime-fp16", "onnxruntime-int8", "openvino", "openvino-bf16",
            "openvino-int8")


def _bundled_calibration(ratio: int, args: argparse.Namespace) -> list:
    """The bundled calibration set at this run's sizes (INT8 backends)."""
    from ..calibration import load_calibration_set
    from ..pipeline import ExportConfig

    config = ExportConfig((args.image,) * 2, (args.features,) * 2, args.channels, (args.features * ratio,) * 2)
    return load_calibration_set(None, config, progress=False)


def _prepare_onnx(backend: str, ratio: int, args: argparse.Namespace, workdir: Path,
                  target: str = "onnxruntime") -> list[str]:
    """Export the model as ``--target`` ``target`` writes it for the backend's attention (image
    encoder: ``-onnx-encoder`` asks for standard operators) and save the inputs in this (parent)
    process; return worker flags."""
    import numpy as np

    from ..checkpoint import load_naf
    from ..onnx_export import export_onnx
    from ..samples import sample_batch
    from ..targets import encoder_ops_for

    attention = "portable" if backend.endswith("portable") else "fused"
    encoder_ops = encoder_ops_for(target, attention, "onnx" if backend.endswith("-onnx-encoder") else None)
    size = (args.features * ratio,) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_naf(args.checkpoint)
    path = export_onnx(model, workdir / f"naf_{attention}_{encoder_ops}_r{ratio}.onnx", image_size=(args.image,) * 2,
                       feature_size=(args.features,) * 2, channels=args.channels, output_size=size,
                       attention=attention, encoder_ops=encoder_ops)
    if backend.endswith("-fp16"):
        from ..quantize import convert_fp16

        path = convert_fp16(path, path.with_name(path.stem + "_fp16.onnx"))
    elif backend.endswith("-int8"):
        from ..quantize import quantize_int8

        path = quantize_int8(path, path.with_name(path.stem + "_int8.onnx"), _bundled_calibration(ratio, args),
                             progress=False)
    image, feats = sample_batch((args.image,) * 2, (args.features,) * 2, args.channels)
    inputs = workdir / f"inputs_r{ratio}.npz"
    np.savez(inputs, image=image.numpy(), features=feats.numpy())
    return ["--model", str(path), "--inputs", str(inputs)]


def _prepare_openvino(backend: str, ratio: int, args: argparse.Namespace, workdir: Path) -> list[str]:
    """Export the fused ONNX model, convert it to OpenVINO IR (INT8: NNCF on the bundled
    calibration set) in this (parent) process; return worker flags."""
    from ..targets.openvino import convert_ir

    flags = _prepare_onnx("onnxruntime", ratio, args, workdir, target="openvino")
    onnx_path = Path(flags[1])
    precision = {"openvino-int8": "int8", "openvino-bf16": "bf16"}.get(backend, "fp32")
    calibration = _bundled_calibration(ratio, args) if precision == "int8" else None
    xml = convert_ir(onnx_path, workdir / f"{onnx_path.stem}_{precision}.xml", precision=precision,
                     calibration=calibration, progress=False)
    return ["--model", str(xml), *flags[2:]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="naf-export bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=["pytorch", "onnxruntime"])
    p.add_argument("--ratios", nargs="+", type=int, default=[2, 4, 8, 16])
    p.add_argument("--channels", type=int, default=384)
    p.add_argument("--image", type=int, default=448)
    p.add_argument("--features", type=int, default=28)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--json", type=Path, help="write all results here")
    p.add_argument("--markdown", type=Path, metavar="MD", help="write the tables (summary and full) here as Markdown")
    p.add_argument("--plot", type=Path, metavar="PNG",
                   help="draw latency against ratio per backend (log scales, FLOP floor dashed) into this PNG")
    return p


def _check_args(args: argparse.Namespace) -> None:
    from ..config import check_count

    for ratio in args.ratios:
        check_count("ratios", ratio, hint=" (output size = features x ratio)")
    check_count("channels", args.channels)
    check_count("image", args.image, 2)
    check_count("features", args.features, 9, hint=" (NAF's attention window is 9)")
    check_count("repeats", args.repeats)
    check_count("threads", args.threads, 1, hint=" (threads of each backend)")
    if args.plot is not None:
        from .report import require_matplotlib

        require_matplotlib()


def run_benchmarks(args: argparse.Namespace) -> tuple[float, list[dict]]:
    """The float32 matmul rate (GFLOP/s) and one result dict per (backend, ratio)."""
    rate = measure_matmul_gflops()
    results = []
    configs = [(b, r) for r in args.ratios for b in args.backends]
    with tempfile.TemporaryDirectory() as tmp:
        for backend, ratio in tqdm(configs, desc="benchmark", unit="run"):
            cmd = [sys.executable, "-m", "naf_export.bench.worker", "--backend",
                   "onnxruntime" if backend.startswith("onnxruntime") else backend,
                   "--ratio", str(ratio), "--channels", str(args.channels), "--image", str(args.image),
                   "--features", str(args.features), "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            if backend.startswith("onnxruntime"):
                cmd += _prepare_onnx(backend, ratio, args, Path(tmp))
                if backend.endswith("-lean"):
                    cmd.append("--lean-memory")
            elif backend.startswith("openvino"):
                cmd += _prepare_openvino(backend, ratio, args, Path(tmp))
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tqdm.write(f"{backend} ratio {ratio}: failed\n{proc.stderr[-2000:]}")
                results.append({"backend": backend, "ratio": ratio, "error": proc.stderr[-2000:]})
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["backend"] = backend
            out = (args.features * ratio,) * 2
            flops = attention_flops(out, args.channels) if backend.endswith("-attention") else naf_flops((args.image,) * 2, out, args.channels)
            result["gflop"] = flops / 1e9
            result["floor_ms"] = flops / (rate * 1e9) * 1e3
            results.append(result)
    return rate, results


def _bench(args: argparse.Namespace) -> int:
    from .report import full_table, plot, summary_table

    _check_args(args)
    rate, results = run_benchmarks(args)
    heading = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"float32 matmul {rate:.0f} GFLOP/s; threads={args.threads}; C={args.channels}, "
               f"image {args.image}, features {args.features}; {time.strftime('%Y-%m-%d')}")
    text = "\n".join([heading, "", summary_table(results), "", full_table(results)]) + "\n"
    print("\n" + text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"matmul_gflops": rate, "results": results}, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot, title=heading)
        print(f"plot: {args.plot}")
    return 1 if any("error" in r for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    """``naf-export bench`` (also ``python -m naf_export.bench``); exits 1 when a backend failed."""
    from ..errors import run_command

    args = build_parser().parse_args(argv)
    return run_command("naf-export bench", lambda: _bench(args))


if __name__ == "__main__":
    sys.exit(main())

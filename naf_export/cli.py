"""The ``naf-export`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from .checkpoint import CheckpointError, load_naf
from .onnx_export import export_onnx
from .pipeline import ExportConfig, Report, measure_latency, parity_against_pytorch, sample_inputs

TARGETS = ("onnxruntime", "onnx")


def build_parser() -> argparse.ArgumentParser:
    defaults = ExportConfig()
    p = argparse.ArgumentParser(
        prog="naf-export",
        description="Export NAF to an edge runtime and prove the artifact against PyTorch.",
    )
    p.add_argument("--target", choices=TARGETS, default="onnxruntime",
                   help="onnx: write the model; onnxruntime: write it, run it, report parity and latency (default)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="release-format NAF checkpoint (naf_release.pth); untrained stand-in weights if omitted")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=defaults.image_size)
    p.add_argument("--feature-size", type=int, nargs=2, metavar=("h", "w"), default=defaults.feature_size)
    p.add_argument("--channels", type=int, default=defaults.channels, metavar="C")
    p.add_argument("--output-size", type=int, nargs=2, metavar=("H", "W"), default=defaults.output_size)
    p.add_argument("--attention", choices=("fused", "portable"), default="fused",
                   help="fused: the naf::CrossScaleNeighborhoodAttention plugin node; portable: standard ONNX ops only")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--out", type=Path, default=Path("naf_export_out"), help="output directory")
    p.add_argument("--samples", type=int, default=2, help="bundled sample images used for parity")
    p.add_argument("--runs", type=int, default=10, help="timed runs for latency")
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0: all cores)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def run(args: argparse.Namespace) -> Report:
    config = ExportConfig(tuple(args.image_size), tuple(args.feature_size), args.channels, tuple(args.output_size))
    model = load_naf(args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(
        model, args.out / f"naf_{args.attention}.onnx",
        image_size=config.image_size, feature_size=config.feature_size, channels=config.channels,
        output_size=config.output_size, attention=args.attention, dynamic_batch=args.dynamic_batch,
    )
    report = Report(target=args.target, precision="fp32", config=config, artifacts={"onnx": str(onnx_path)})
    if args.checkpoint is None:
        report.notes.append("untrained stand-in weights (no --checkpoint): parity is meaningful, features are not")
    if args.target == "onnxruntime":
        from .runners.onnxruntime import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(onnx_path, threads=args.threads)
        inputs = sample_inputs(config, args.samples)
        report.parity = parity_against_pytorch(model, runner, inputs, config.output_size)
        report.latency_ms = measure_latency(runner, *inputs[0], runs=args.runs)
    report.write(args.out)
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    warnings.simplefilter("default")
    try:
        report = run(args)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"naf-export: error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"  report       {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

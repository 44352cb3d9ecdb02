"""The ``naf-export`` command line: ``naf-export [export options]`` and ``naf-export validate``."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from .checkpoint import load_naf, resolve_checkpoint
from .errors import EXIT_OK, run_command
from .int8_search import AccuracyBound
from .onnx_export import ENCODER_OPS
from .pipeline import ExportConfig
from .targets import TARGETS, ExportRequest, run_target


def build_parser() -> argparse.ArgumentParser:
    defaults = ExportConfig()
    p = argparse.ArgumentParser(
        prog="naf-export",
        description="Export NAF to an edge runtime and prove the artifact against PyTorch. Subcommands: "
                    "'naf-export validate ARTIFACT' compares an existing artifact with PyTorch; 'naf-export bench' "
                    "times backends on the official protocol; 'naf-export convert-checkpoint IN OUT.safetensors' "
                    "rewrites weights without pickle.",
    )
    p.add_argument("--target", choices=tuple(TARGETS), default="onnxruntime",
                   help="onnx: write the model; onnxruntime (default), openvino, tensorrt: build the "
                        "artifact, run it, report parity and latency; coreml: build the .mlpackage and report "
                        "parity (off macOS by evaluating its program, without latency)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="NAF weights: 'release' (the release checkpoint, downloaded once into torch hub's cache), "
                        "a release-format .pth or a .safetensors file; untrained stand-in weights if omitted")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=defaults.image_size)
    p.add_argument("--feature-size", type=int, nargs=2, metavar=("h", "w"), default=defaults.feature_size)
    p.add_argument("--channels", type=int, default=defaults.channels, metavar="C")
    p.add_argument("--output-size", type=int, nargs=2, metavar=("H", "W"), default=defaults.output_size)
    p.add_argument("--attention", choices=("fused", "portable"), default="fused",
                   help="fused: the naf::CrossScaleNeighborhoodAttention plugin node; portable: standard ONNX ops only")
    p.add_argument("--encoder-ops", choices=ENCODER_OPS, default=None,
                   help="the image encoder's elementwise steps: fused: GroupNorm+SiLU+pad and RoPE as "
                        "naf::GroupNormSiLU / naf::AxialRoPE plugin nodes (ONNX Runtime; its default with fused "
                        "attention); rope: the RoPE alone as naf::AxialRoPE (ONNX Runtime, OpenVINO; OpenVINO's "
                        "default); onnx: standard operators (every runtime)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="half-precision weights and activations")
    precision.add_argument("--bf16", action="store_true",
                           help="bfloat16 inference (openvino, on CPUs with AVX512-BF16 or AMX)")
    precision.add_argument("--int8", action="store_true",
                           help="INT8 post-training quantization calibrated on --data (or the bundled set)")
    p.add_argument("--max-rel-l2", type=float, default=None, metavar="X",
                   help="with --int8: keep the most sensitive convolutions in float until every held-out sample "
                        "image's relative L2 error against PyTorch is at most X (onnxruntime, openvino)")
    p.add_argument("--min-cosine", type=float, default=None, metavar="Y",
                   help="with --int8: likewise, until every pixel's cosine similarity is at least Y")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="calibration images (+ optional .npy/.pt features of the same stem) for --int8")
    p.add_argument("--plugin", type=Path, default=None,
                   help="plugin library to load (default: the one built with the package)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--batch-range", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"), default=(1, 1, 8),
                   help="tensorrt with --dynamic-batch: the optimisation profile's batch sizes (default 1 1 8)")
    p.add_argument("--lean-memory", action="store_true",
                   help="lower peak memory for some speed (onnxruntime: no CPU memory arena)")
    p.add_argument("--out", type=Path, default=Path("naf_export_out"), help="output directory")
    p.add_argument("--samples", type=int, default=2, help="bundled sample images used for parity")
    p.add_argument("--runs", type=int, default=10, help="timed runs for latency")
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0: all cores)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def request_from_args(args: argparse.Namespace) -> ExportRequest:
    if args.data is not None and not args.int8:
        raise ValueError("--data: calibration images are only used with --int8")
    config = ExportConfig(tuple(args.image_size), tuple(args.feature_size), args.channels, tuple(args.output_size))
    checkpoint = resolve_checkpoint(args.checkpoint)
    return ExportRequest(
        model=load_naf(checkpoint),
        config=config,
        out=args.out,
        attention=args.attention,
        dynamic_batch=args.dynamic_batch,
        precision="fp16" if args.fp16 else "bf16" if args.bf16 else "int8" if args.int8 else "fp32",
        data=args.data,
        samples=args.samples,
        runs=args.runs,
        threads=args.threads,
        checkpoint=checkpoint,
        plugin=args.plugin,
        lean_memory=args.lean_memory,
        batch_range=tuple(args.batch_range),
        encoder_ops=args.encoder_ops,
        int8_bound=(AccuracyBound(args.max_rel_l2, args.min_cosine)
                    if args.max_rel_l2 is not None or args.min_cosine is not None else None),
    )


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    warnings.simplefilter("default")


def _export(args: argparse.Namespace) -> int:
    report = run_target(args.target, request_from_args(args))
    print(report.summary())
    print(f"  report       {args.out / 'report.json'}")
    return EXIT_OK


def convert_checkpoint_main(argv: list[str]) -> int:
    """``naf-export convert-checkpoint IN OUT.safetensors``."""
    from .checkpoint import convert_checkpoint

    p = argparse.ArgumentParser(prog="naf-export convert-checkpoint",
                                description="Write NAF weights as a .safetensors file (loading it needs no pickle).")
    p.add_argument("source", help="'release' (the release weights) or a release-format .pth / .safetensors file")
    p.add_argument("destination", type=Path, help="the .safetensors file to write")
    args = p.parse_args(argv)

    def run() -> int:
        path = convert_checkpoint(args.source, args.destination)
        print(f"wrote {path}")
        return EXIT_OK

    return run_command("naf-export convert-checkpoint", run)


def _subcommand(name: str):
    if name == "validate":
        from .validate import main
    elif name == "bench":
        from .bench.__main__ import main
    else:
        main = convert_checkpoint_main
    return main


SUBCOMMANDS = ("validate", "bench", "convert-checkpoint")


def main(argv: list[str] | None = None) -> int:
    """``naf-export``; the exit status is documented in :mod:`naf_export.errors`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return _subcommand(argv[0])(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return run_command("naf-export", lambda: _export(args))


if __name__ == "__main__":
    sys.exit(main())

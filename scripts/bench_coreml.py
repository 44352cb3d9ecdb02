"""Core ML packages per precision: size on disk, conversion time and MIL-evaluated parity.

    python scripts/bench_coreml.py                       # official protocol: 448² image, 28² features, C=384
    python scripts/bench_coreml.py --output-sizes 56 112 90 --samples 2

For each output size (a divisible ratio uses the attention's cell form, any other its gather form)
and each precision, the package is built and saved as ``naf-export --target coreml`` does
(``naf_export.coreml_export.export_coreml``), then read back and evaluated op by op with numpy
(``naf_export.mil_eval``: MIL evaluation, not the Core ML runtime) on the bundled sample images
against PyTorch float32; parity is the worst over the images. Besides the shipped precisions,
float16 compute is measured with nothing, only the GroupNorm statistics, only the softmax, or both
kept in float32. Conversion time = program build + conversion + save, after one warm-up
conversion. Seeded stand-in weights unless --checkpoint. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from naf_export.checkpoint import load_naf  # noqa: E402
from naf_export.coreml_export import export_coreml  # noqa: E402
from naf_export.metrics import parity  # noqa: E402
from naf_export.mil_eval import MilEvaluator, load_program  # noqa: E402
from naf_export.pipeline import ExportConfig, sample_inputs  # noqa: E402
from naf_export.targets.coreml import FP16_FP32_SCOPES  # noqa: E402

#: (label, precision, float32 scopes under float16 compute)
VARIANTS = [
    ("fp32", "fp32", ()),
    ("fp16, all float16", "fp16", ()),
    ("fp16, GroupNorm stats float32", "fp16", ("group_norm",)),
    ("fp16, softmax float32", "fp16", ("softmax",)),
    ("fp16, GroupNorm stats + softmax float32", "fp16", ("group_norm", "softmax")),
    ("int8 conv weights + fp16", "int8", FP16_FP32_SCOPES),
]


def _shipped(precision: str, scopes: tuple[str, ...]) -> bool:
    return precision == "fp32" or tuple(scopes) == FP16_FP32_SCOPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, nargs=2, default=(448, 448))
    parser.add_argument("--feature-size", type=int, nargs=2, default=(28, 28))
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--output-sizes", type=int, nargs="+", default=[56, 90], help="square output sizes")
    parser.add_argument("--samples", type=int, default=2, help="bundled sample images for parity")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)  # the stand-in weights' warning
    model = load_naf(args.checkpoint)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        small = dict(image_size=(36, 36), feature_size=(9, 9), channels=8, output_size=(18, 18))
        export_coreml(model, Path(tmp) / "warmup.mlpackage", **small)
        for size in args.output_sizes:
            config = ExportConfig(tuple(args.image_size), tuple(args.feature_size), args.channels, (size, size))
            form = "cells" if size % config.feature_size[0] == 0 and size % config.feature_size[1] == 0 else "gather"
            inputs = sample_inputs(config, args.samples)
            with torch.inference_mode():
                refs = [model(torch.from_numpy(i), torch.from_numpy(f), config.output_size).numpy() for i, f in inputs]
            for label, precision, scopes in VARIANTS:
                path = Path(tmp) / f"{size}_{label.replace(' ', '_').replace(',', '')}.mlpackage"
                result = export_coreml(model, path, image_size=config.image_size, feature_size=config.feature_size,
                                       channels=config.channels, output_size=config.output_size,
                                       precision=precision, fp32_scopes=scopes)
                evaluate = MilEvaluator(load_program(path))
                metrics = [parity(evaluate(image=i, features=f)["upsampled"], ref) for (i, f), ref in zip(inputs, refs)]
                rows.append((f"{size}² ({form})", label + (" *" if _shipped(precision, scopes) else ""),
                             result.size_bytes / 1e6, result.convert_seconds,
                             max(m["rel_l2"] for m in metrics), max(m["max_abs"] for m in metrics),
                             min(m["cosine_min"] for m in metrics)))
                print(f"  done {rows[-1][0]} {label}", flush=True)

    (ih, iw), (fh, fw) = args.image_size, args.feature_size
    weights = f"checkpoint {args.checkpoint}" if args.checkpoint else "stand-in weights"
    print(f"\nimage {ih}x{iw}, features {args.channels}x{fh}x{fw}, {args.samples} sample images, {weights}; "
          "* = what --target coreml ships\n")
    print("| output | precision | package MB | conversion s | MIL rel_l2 | MIL max_abs | MIL cosine min |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for output, label, mb, seconds, rel, mx, cos in rows:
        print(f"| {output} | {label} | {mb:.2f} | {seconds:.1f} | {rel:.2e} | {mx:.2e} | {cos:.6f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

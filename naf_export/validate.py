"""``naf-export validate ARTIFACT``: what an artifact's precision and runtime cost, in numbers and
pictures.

The artifact (ONNX with or without the plugin, OpenVINO IR, TensorRT engine) and the PyTorch
float32 model run on the same inputs. Per image and overall it reports max_abs, rel_l2, cosine
(mean, min), PSNR, and a downstream proxy: a K-means segmentation (fitted on the float32
output) of both outputs and the mIoU between them. It writes ``report.json``, ``report.md`` and
PNGs (PCA colour maps and K-means segmentations side by side, per-pixel error heat map), and
exits 1 when a threshold given on the command line is missed, so it can gate CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, load_naf
from .metrics import kmeans_fit, kmeans_segment, mean_iou, parity, psnr
from .pipeline import ExportConfig, sample_inputs
from .samples import IMAGENET_MEAN, IMAGENET_STD, SAMPLE_IMAGES

__all__ = ["THRESHOLDS", "main", "validate_artifact"]

#: Command-line gates: option -> (overall metric, direction).
THRESHOLDS = {
    "max_rel_l2": ("rel_l2", "max"),
    "min_cosine": ("cosine_min", "min"),
    "min_cosine_mean": ("cosine_mean", "min"),
    "min_miou": ("miou_min", "min"),
}

Sample = tuple[str, np.ndarray, np.ndarray]


def _inputs(data: Path | None, config: ExportConfig, limit: int | None) -> list[Sample]:
    if data is None:
        count = len(SAMPLE_IMAGES) if limit is None else min(limit, len(SAMPLE_IMAGES))
        return [(name, *pair) for name, pair in zip(SAMPLE_IMAGES, sample_inputs(config, count))]
    from .calibration import list_images, load_calibration_set

    pairs = load_calibration_set(data, config, limit=limit, progress=False)
    return [(path.stem, *pair) for path, pair in zip(list_images(data), pairs)]


def _display_image(image: np.ndarray) -> np.ndarray:
    """Undo the ImageNet normalisation: (1, 3, H, W) -> (H, W, 3) uint8."""
    rgb = image[0].transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _image_metrics(output: np.ndarray, reference: np.ndarray, clusters: int) -> tuple[dict, np.ndarray, np.ndarray]:
    metrics = parity(output, reference)
    metrics["psnr"] = psnr(output, reference) if np.isfinite(output).all() else float("-inf")
    centroids = kmeans_fit(reference, clusters)
    ref_labels = kmeans_segment(reference, centroids)
    out_labels = kmeans_segment(np.nan_to_num(output), centroids)
    metrics["miou"] = mean_iou(out_labels, ref_labels)
    return metrics, ref_labels, out_labels


def _pictures(out: Path, name: str, image, reference, output, ref_labels, out_labels) -> list[str]:
    from .visualize import error_heatmap, heat_colors, label_colors, pca_basis, pca_colors, save_panel

    basis = pca_basis(reference)
    pca_path, error_path = out / f"{name}_pca.png", out / f"{name}_error.png"
    save_panel(pca_path, [
        ("input", _display_image(image)),
        ("float32 PCA", pca_colors(reference, basis)),
        ("artifact PCA", pca_colors(np.nan_to_num(output), basis)),
        ("float32 k-means", label_colors(ref_labels)),
        ("artifact k-means", label_colors(out_labels)),
    ], legend="PCA fitted on the float32 output; both maps share its colour scale")
    err = error_heatmap(np.nan_to_num(output), reference)
    vmax = float(np.percentile(err, 99.9)) or 1e-12
    save_panel(error_path, [("input", _display_image(image)), ("relative error", heat_colors(err, vmax))],
               legend=f"per-pixel ||out-ref||/||ref||: black 0, pale yellow >= {vmax:.3g}")
    return [str(pca_path), str(error_path)]


def _overall(rows: list[dict]) -> dict:
    col = {k: np.array([r[k] for r in rows], dtype=float) for k in ("max_abs", "rel_l2", "cosine_min",
                                                                    "cosine_mean", "psnr", "miou")}
    return {
        "max_abs": float(col["max_abs"].max()),
        "rel_l2": float(col["rel_l2"].max()),
        "cosine_min": float(col["cosine_min"].min()),
        "cosine_mean": float(col["cosine_mean"].mean()),
        "psnr": float(col["psnr"].min()),
        "miou": float(col["miou"].mean()),
        "miou_min": float(col["miou"].min()),
    }


def _check(overall: dict, thresholds: dict[str, float | None]) -> list[str]:
    failures = []
    for option, limit in thresholds.items():
        if limit is None:
            continue
        metric, direction = THRESHOLDS[option]
        value = overall[metric]
        missed = not (value <= limit) if direction == "max" else not (value >= limit)  # NaN misses
        if missed:
            sign = "<=" if direction == "max" else ">="
            failures.append(f"{metric} = {value:.6g}, required {sign} {limit:g} (--{option.replace('_', '-')})")
    return failures


def markdown_table(report: dict) -> str:
    lines = [
        f"# naf-export validate: `{report['artifact']}`",
        "",
        f"Runtime: {report['runtime']}; reference: {report['reference']}; data: {report['data']}.",
        "",
        "| image | max_abs | rel_l2 | cosine mean | cosine min | PSNR (dB) | k-means mIoU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["images"]:
        lines.append(f"| {row['name']} | {row['max_abs']:.3g} | {row['rel_l2']:.3g} | {row['cosine_mean']:.6f} | "
                     f"{row['cosine_min']:.6f} | {row['psnr']:.1f} | {row['miou']:.4f} |")
    o = report["overall"]
    lines.append(f"| **overall** (worst; mean for cosine mean and mIoU) | {o['max_abs']:.3g} | {o['rel_l2']:.3g} | "
                 f"{o['cosine_mean']:.6f} | {o['cosine_min']:.6f} | {o['psnr']:.1f} | {o['miou']:.4f} |")
    lines += ["", f"Result: {'PASS' if report['passed'] else 'FAIL'}"]
    lines += [f"- missed: {f}" for f in report["failures"]]
    return "\n".join(lines) + "\n"


def validate_artifact(
    artifact: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    plugin: str | os.PathLike[str] | None = None,
    clusters: int = 8,
    limit: int | None = None,
    threads: int = 0,
    pictures: bool = True,
    thresholds: dict[str, float | None] | None = None,
    progress: bool = True,
) -> dict:
    """Run ``artifact`` and the PyTorch float32 model on the same inputs; write and return the report."""
    from tqdm import tqdm

    from .runners import artifact_kind, open_artifact

    if clusters < 2:
        raise ValueError(f"clusters: expected at least 2 k-means clusters, got {clusters}")
    runner = open_artifact(artifact, plugin=plugin, threads=threads)
    config: ExportConfig = runner.config
    model = load_naf(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = _inputs(None if data is None else Path(data), config, limit)
    rows, files = [], []
    for name, image, feats in tqdm(samples, desc="validate", unit="img", disable=not progress):
        with torch.inference_mode():
            reference = model(torch.from_numpy(image), torch.from_numpy(feats), config.output_size).numpy()
        output = runner(image, feats)
        metrics, ref_labels, out_labels = _image_metrics(output, reference, clusters)
        rows.append({"name": name, **metrics})
        if pictures:
            files += _pictures(out, name, image, reference, output, ref_labels, out_labels)
    overall = _overall(rows)
    thresholds = {k: v for k, v in (thresholds or {}).items() if v is not None}
    failures = _check(overall, thresholds)
    report = {
        "artifact": os.fspath(artifact),
        "runtime": artifact_kind(artifact),
        "config": {"image_size": list(config.image_size), "feature_size": list(config.feature_size),
                   "channels": config.channels, "output_size": list(config.output_size)},
        "reference": f"PyTorch float32 ({os.fspath(checkpoint) if checkpoint else 'untrained stand-in weights'})",
        "data": os.fspath(data) if data is not None else "bundled sample images",
        "kmeans_clusters": clusters,
        "images": rows,
        "overall": overall,
        "thresholds": thresholds,
        "passed": not failures,
        "failures": failures,
        "pictures": files,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown_table(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="naf-export validate", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("artifact", type=Path, help="model.onnx, model.xml (OpenVINO IR) or model.engine (TensorRT)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="images (+ optional .npy/.pt features of the same stem); default: the bundled sample images")
    p.add_argument("--checkpoint", type=Path, default=None, help="the checkpoint the artifact was exported from")
    p.add_argument("--plugin", type=Path, default=None, help="plugin/extension library (default: the package's)")
    p.add_argument("--out", type=Path, default=Path("naf_validate_out"), help="output directory")
    p.add_argument("--clusters", type=int, default=8, help="K of the k-means segmentation proxy")
    p.add_argument("--limit", type=int, default=None, help="validate on the first N images only")
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0: all cores)")
    p.add_argument("--no-pictures", action="store_true", help="skip the PNGs")
    p.add_argument("--max-rel-l2", type=float, default=None, help="fail if the worst image's rel_l2 is above")
    p.add_argument("--min-cosine", type=float, default=None, help="fail if the worst pixel cosine is below")
    p.add_argument("--min-cosine-mean", type=float, default=None, help="fail if the mean cosine is below")
    p.add_argument("--min-miou", type=float, default=None, help="fail if the worst image's k-means mIoU is below")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    warnings.simplefilter("default")
    try:
        report = validate_artifact(
            args.artifact, out=args.out, data=args.data, checkpoint=args.checkpoint, plugin=args.plugin,
            clusters=args.clusters, limit=args.limit, threads=args.threads, pictures=not args.no_pictures,
            thresholds={k: getattr(args, k) for k in THRESHOLDS},
        )
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"naf-export validate: error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(report), end="")
    print(f"report: {args.out / 'report.json'}, {args.out / 'report.md'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

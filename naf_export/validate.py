"""``naf-export validate ARTIFACT``: what an artifact's precision and runtime cost, in numbers and
pictures.

The artifact (ONNX with or without the plugin, OpenVINO IR, TensorRT engine, Core ML package) and
the PyTorch float32 model run on the same inputs. Per image and overall it reports max_abs, rel_l2,
cosine (mean, min), PSNR, and a downstream proxy: a K-means segmentation (fitted on the float32
output) of both outputs and the mIoU between them. It writes ``report.json``, ``report.md`` and
PNGs (PCA colour maps and K-means segmentations side by side, per-pixel error heat map), and
exits 1 when a threshold given on the command line is missed, so it can gate CI.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_naf, resolve_checkpoint
from .config import check_count, check_threads
from .errors import EXIT_CHECK_FAILED, EXIT_OK, run_command
from .jsonio import write_json
from .metrics import kmeans_fit, kmeans_segment, mean_iou, parity, psnr
from .model import NAF
from .pipeline import ExportConfig, sample_inputs
from .release import file_sha256
from .sizing import check_memory
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

#: Runtimes whose runners return NAF.stages() (run_stages).
STAGE_RUNTIMES = ("onnxruntime", "openvino")
#: What each of NAF.STAGES is (validate --stages).
STAGE_MEANINGS = {
    "encoder": "image encoder output, pooled to the output size (256 x H x W)",
    "queries": "queries: the encoder output after RoPE",
    "keys": "keys: the queries pooled to the feature size",
    "output": "attention output (the upsampled features)",
}


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
    metrics["psnr"] = psnr(output, reference)
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
    # NaN (an image with poisoned output) wins every worst case: it must not hide behind the others.
    return {
        "max_abs": float(col["max_abs"].max()),
        "rel_l2": float(col["rel_l2"].max()),
        "cosine_min": float(col["cosine_min"].min()),
        "cosine_mean": float(col["cosine_mean"].mean()),
        "psnr": float(col["psnr"].min()),
        "miou": float(col["miou"].mean()),
        "miou_min": float(col["miou"].min()),
        "nonfinite": int(sum(r["nonfinite"] for r in rows)),
    }


def _stage_overall(per_image: list[dict]) -> dict:
    """One stage's worst case over the images (mean for cosine mean)."""
    return {"max_abs": max(p["max_abs"] for p in per_image), "rel_l2": max(p["rel_l2"] for p in per_image),
            "cosine_min": min(p["cosine_min"] for p in per_image),
            "cosine_mean": float(np.mean([p["cosine_mean"] for p in per_image])),
            "nonfinite": sum(p["nonfinite"] for p in per_image)}


def _check(overall: dict, thresholds: dict[str, float | None]) -> list[str]:
    failures = []
    if overall["nonfinite"]:  # always checked: no threshold makes a poisoned output acceptable
        failures.append(f"nonfinite = {overall['nonfinite']}: the artifact's output is NaN/Inf where PyTorch's is finite")
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


def _num(value: float, spec: str) -> str:
    """A metric for the table; NaN (a poisoned output's metrics, null in report.json) as "NaN"."""
    return "NaN" if np.isnan(value) else format(value, spec)


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
        lines.append(f"| {row['name']} | {_num(row['max_abs'], '.3g')} | {_num(row['rel_l2'], '.3g')} | "
                     f"{_num(row['cosine_mean'], '.6f')} | {_num(row['cosine_min'], '.6f')} | {_num(row['psnr'], '.1f')} | "
                     f"{row['miou']:.4f} |")
    o = report["overall"]
    lines.append(f"| **overall** (worst; mean for cosine mean and mIoU) | {_num(o['max_abs'], '.3g')} | "
                 f"{_num(o['rel_l2'], '.3g')} | {_num(o['cosine_mean'], '.6f')} | {_num(o['cosine_min'], '.6f')} | "
                 f"{_num(o['psnr'], '.1f')} | {o['miou']:.4f} |")
    if "stages" in o:
        lines += ["", "Stages (the artifact's intermediate tensors against PyTorch's; worst image, mean for cosine mean):",
                  "", "| stage | tensor | max_abs | rel_l2 | cosine mean | cosine min |", "|---|---|---:|---:|---:|---:|"]
        for stage, m in o["stages"].items():
            lines.append(f"| {stage} | {STAGE_MEANINGS[stage]} | {_num(m['max_abs'], '.3g')} | {_num(m['rel_l2'], '.3g')} "
                         f"| {_num(m['cosine_mean'], '.6f')} | {_num(m['cosine_min'], '.6f')} |")
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
    stages: bool = False,
    thresholds: dict[str, float | None] | None = None,
    progress: bool = True,
) -> dict:
    """Run ``artifact`` and the PyTorch float32 model on the same inputs; write the report and return
    it (metrics as floats, NaN/inf included; report.json writes those as null).

    ``out`` is written atomically (:class:`naf_export.outdir.OutputDir`): a run that fails leaves
    it as it was. Raises ValueError/FileNotFoundError for bad arguments or an artifact that cannot
    run (:class:`naf_export.errors.ArtifactError`), TargetUnavailable when its runtime is missing."""
    from tqdm import tqdm

    from .outdir import OutputDir
    from .runners import artifact_kind, open_artifact

    if stages and artifact_kind(artifact) not in STAGE_RUNTIMES:
        raise ValueError(f"stages: {artifact_kind(artifact)} artifacts do not expose their intermediate tensors here "
                         f"(a TensorRT engine holds only the outputs it was built with); --stages covers "
                         f"{' and '.join(STAGE_RUNTIMES)} artifacts")
    if clusters < 2:
        raise ValueError(f"clusters: expected at least 2 k-means clusters, got {clusters}")
    if limit is not None:
        check_count("limit", limit, hint=" (images to validate on)")
    check_threads(threads)
    if data is not None and Path(out).resolve() == Path(data).resolve():
        raise ValueError(f"out: {os.fspath(out)!r} is the --data folder; the pictures written there would become "
                         "inputs of the next run: choose another folder")
    runner = open_artifact(artifact, plugin=plugin, threads=threads)
    config: ExportConfig = runner.config
    check_memory(config)
    checkpoint = resolve_checkpoint(checkpoint)
    model = load_naf(checkpoint)
    with OutputDir(out) as folder:
        samples = _inputs(None if data is None else Path(data), config, limit)
        rows, files = [], []
        for name, image, feats in tqdm(samples, desc="validate", unit="img", disable=not progress):
            image_t, feats_t = torch.from_numpy(image), torch.from_numpy(feats)
            with torch.inference_mode():
                if stages:  # the reference's intermediate results too (inputs checked as forward checks them)
                    model.check_inputs(image_t, feats_t, config.output_size)
                    ref_stages = {k: v.numpy() for k, v in model.stages(image_t, feats_t, config.output_size).items()}
                    reference = ref_stages["output"]
                else:
                    reference = model(image_t, feats_t, config.output_size).numpy()
            if not np.isfinite(reference).all():
                raise ValueError(f"checkpoint: the PyTorch model's own output on {name!r} is not finite; its weights "
                                 "overflow on this input")
            output = runner(image, feats)
            metrics, ref_labels, out_labels = _image_metrics(output, reference, clusters)
            rows.append({"name": name, **metrics})
            if stages:
                art_stages = runner.run_stages(image, feats)
                rows[-1]["stages"] = {k: parity(art_stages[k], ref_stages[k]) for k in ref_stages}
            if pictures:
                files += _pictures(folder.staging, name, image, reference, output, ref_labels, out_labels)
        overall = _overall(rows)
        if stages:
            overall["stages"] = {stage: _stage_overall([r["stages"][stage] for r in rows]) for stage in NAF.STAGES}
        thresholds = {k: v for k, v in (thresholds or {}).items() if v is not None}
        failures = _check(overall, thresholds)
        report = {
            "artifact": os.fspath(artifact),
            "runtime": getattr(runner, "runtime_label", artifact_kind(artifact)),
            "config": {"image_size": list(config.image_size), "feature_size": list(config.feature_size),
                       "channels": config.channels, "output_size": list(config.output_size)},
            "reference": f"PyTorch float32 ({os.fspath(checkpoint) if checkpoint else 'untrained stand-in weights'})",
            "checkpoint": None if checkpoint is None else {"path": os.fspath(checkpoint),
                                                           "sha256": file_sha256(checkpoint)},
            "data": os.fspath(data) if data is not None else "bundled sample images",
            "kmeans_clusters": clusters,
            "images": rows,
            "overall": overall,
            "thresholds": thresholds,
            "passed": not failures,
            "failures": failures,
            "pictures": [folder.relocate(f) for f in files],
        }
        write_json(folder.staging / "report.json", report)
        (folder.staging / "report.md").write_text(markdown_table(report))
        folder.commit(last=("report.md", "report.json"))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="naf-export validate", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("artifact", type=Path,
                   help="model.onnx, model.xml (OpenVINO IR), model.engine (TensorRT) or model.mlpackage (Core ML)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="images (+ optional .npy/.pt features of the same stem); default: the bundled sample images")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the weights the artifact was exported from: 'release', a .pth or a .safetensors file")
    p.add_argument("--plugin", type=Path, default=None, help="plugin/extension library (default: the package's)")
    p.add_argument("--out", type=Path, default=Path("naf_validate_out"), help="output directory")
    p.add_argument("--clusters", type=int, default=8, help="K of the k-means segmentation proxy")
    p.add_argument("--limit", type=int, default=None, help="validate on the first N images only")
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0: all cores)")
    p.add_argument("--no-pictures", action="store_true", help="skip the PNGs")
    p.add_argument("--stages", action="store_true",
                   help="also compare the artifact's intermediate tensors (encoder output, queries after RoPE, pooled "
                        "keys, attention output) with PyTorch's, per stage (ONNX and OpenVINO artifacts)")
    p.add_argument("--max-rel-l2", type=float, default=None, help="fail if the worst image's rel_l2 is above")
    p.add_argument("--min-cosine", type=float, default=None, help="fail if the worst pixel cosine is below")
    p.add_argument("--min-cosine-mean", type=float, default=None, help="fail if the mean cosine is below")
    p.add_argument("--min-miou", type=float, default=None, help="fail if the worst image's k-means mIoU is below")
    return p


def _validate(args: argparse.Namespace) -> int:
    report = validate_artifact(
        args.artifact, out=args.out, data=args.data, checkpoint=args.checkpoint, plugin=args.plugin,
        clusters=args.clusters, limit=args.limit, threads=args.threads, pictures=not args.no_pictures, stages=args.stages,
        thresholds={k: getattr(args, k) for k in THRESHOLDS},
    )
    print(markdown_table(report), end="")
    print(f"report: {args.out / 'report.json'}, {args.out / 'report.md'}")
    return EXIT_OK if report["passed"] else EXIT_CHECK_FAILED


def main(argv: list[str] | None = None) -> int:
    """``naf-export validate``; the exit status is documented in :mod:`naf_export.errors`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    warnings.simplefilter("default")
    return run_command("naf-export validate", lambda: _validate(args))


if __name__ == "__main__":
    sys.exit(main())

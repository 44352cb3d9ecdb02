"""Shared steps of every target: sample inputs, parity against PyTorch, latency, report."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .config import ExportConfig, check_count, config_from_shapes
from .errors import CheckFailed
from .jsonio import write_json
from .metrics import parity
from .model import NAF
from .samples import SAMPLE_IMAGES, sample_batch

__all__ = ["ExportConfig", "Report", "config_from_shapes", "measure_latency", "parity_against_pytorch", "sample_inputs"]

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def sample_inputs(config: ExportConfig, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (image, features) pairs of batch 1 from the bundled images."""
    if not 1 <= count <= len(SAMPLE_IMAGES):
        raise ValueError(f"samples: expected 1..{len(SAMPLE_IMAGES)}, got {count}")
    pairs = []
    for name in SAMPLE_IMAGES[:count]:
        image, feats = sample_batch(config.image_size, config.feature_size, config.channels, names=[name])
        pairs.append((image.numpy(), feats.numpy()))
    return pairs


def parity_against_pytorch(
    model: NAF, runner: Runner, inputs: Sequence[tuple[np.ndarray, np.ndarray]], output_size: tuple[int, int]
) -> dict[str, float]:
    """Worst case over the inputs of each parity metric (max for errors, min for cosines).

    Raises CheckFailed when the artifact's output is NaN/Inf where PyTorch's is finite (parity of
    a poisoned output would be meaningless), ValueError when PyTorch's own output is not finite
    (weights that overflow on the sample images)."""
    per_input = []
    for index, (image, feats) in enumerate(inputs):
        with torch.inference_mode():
            ref = model(torch.from_numpy(image), torch.from_numpy(feats), output_size).numpy()
        if not np.isfinite(ref).all():
            raise ValueError(f"checkpoint: the PyTorch model's own output on sample {index} is not finite "
                             f"({int((~np.isfinite(ref)).sum())} NaN/Inf values); its weights overflow")
        result = parity(runner(image, feats), ref)
        if result["nonfinite"]:
            raise CheckFailed(f"parity: the artifact's output on sample {index} has {result['nonfinite']} NaN/Inf "
                              "values where PyTorch's float32 output is finite")
        per_input.append(result)
    return {
        "max_abs": max(p["max_abs"] for p in per_input),
        "rel_l2": max(p["rel_l2"] for p in per_input),
        "cosine_min": min(p["cosine_min"] for p in per_input),
        "cosine_mean": float(np.mean([p["cosine_mean"] for p in per_input])),
    }


def measure_latency(runner: Runner, image: np.ndarray, feats: np.ndarray, runs: int, warmup: int = 1) -> dict[str, float]:
    """Median and 90th percentile wall time of ``runner`` in milliseconds."""
    for _ in range(warmup):
        runner(image, feats)
    times = []
    for _ in range(check_count("runs", runs)):
        start = time.perf_counter()
        runner(image, feats)
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    return {
        "median": statistics.median(times),
        "p90": times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))],
        "runs": len(times),
    }


@dataclass
class Report:
    """What every target writes to ``report.json``."""

    target: str
    precision: str
    config: ExportConfig
    artifacts: dict[str, str] = field(default_factory=dict)
    parity: dict[str, float] | None = None
    latency_ms: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    checkpoint: dict[str, str] | None = None  # {"path", "sha256"} of the weights' file; None: stand-in weights
    quantization: dict | None = None  # accuracy-targeted INT8: what was kept in float, errors, speed cost

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "precision": self.precision,
            "config": {
                "image_size": list(self.config.image_size),
                "feature_size": list(self.config.feature_size),
                "channels": self.config.channels,
                "output_size": list(self.config.output_size),
            },
            "checkpoint": self.checkpoint,
            "artifacts": self.artifacts,
            "parity": self.parity,
            "latency_ms": self.latency_ms,
            "notes": self.notes,
            **({"quantization": self.quantization} if self.quantization is not None else {}),
        }

    def write(self, directory: str | os.PathLike[str]) -> Path:
        return write_json(Path(directory) / "report.json", self.to_dict())

    def relocate(self, move: Callable[[str], str]) -> None:
        """Rewrite the paths in artifacts and notes with ``move`` (staging folder -> output folder)."""
        self.artifacts = {name: move(path) for name, path in self.artifacts.items()}
        self.notes = [move(note) for note in self.notes]

    def summary(self) -> str:
        lines = [f"naf-export  target={self.target}  precision={self.precision}"]
        for name, path in self.artifacts.items():
            lines.append(f"  {name:<12} {path}")
        if self.parity:
            p = self.parity
            lines.append(
                "  parity vs PyTorch fp32: "
                f"max_abs={p['max_abs']:.3g}  rel_l2={p['rel_l2']:.3g}  "
                f"cosine_min={p['cosine_min']:.6f}  cosine_mean={p['cosine_mean']:.6f}"
            )
        if self.latency_ms:
            lat = self.latency_ms
            lines.append(f"  latency: median {lat['median']:.1f} ms, p90 {lat['p90']:.1f} ms ({lat['runs']} runs)")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

"""Accuracy-targeted INT8: the fewest convolutions kept in float for an error bound to hold.

``naf-export --int8 --max-rel-l2 X`` (or ``--min-cosine Y``) quantizes every convolution, measures
the artifact against PyTorch float32 on held-out images (the bundled sample images, disjoint from
the calibration set), and, while the bound is missed, ranks the convolutions by sensitivity (the
error left when each alone stays in float) and returns them to float, most sensitive first, until
the bound holds. The result says which layers were kept and what the bound cost in speed.

This module is the search; each runtime supplies how to build an artifact with given layers in
float (``build``). OpenVINO uses NNCF's own accuracy-control quantization instead
(:func:`naf_export.targets.openvino.quantize_int8_to_bound`), which ranks and reverts layers on the
quantized graph without collecting statistics again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .metrics import parity

__all__ = ["AccuracyBound", "SearchResult", "held_out_error", "search_float_layers"]

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]
Pairs = Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class AccuracyBound:
    """What an accuracy-targeted INT8 artifact must meet on every held-out image: the relative L2
    error at most ``max_rel_l2`` and/or the per-pixel cosine similarity at least ``min_cosine``."""

    max_rel_l2: float | None = None
    min_cosine: float | None = None

    def __post_init__(self) -> None:
        if self.max_rel_l2 is None and self.min_cosine is None:
            raise ValueError("bound: give --max-rel-l2 and/or --min-cosine")
        if self.max_rel_l2 is not None and not 0 < self.max_rel_l2 < 1:
            raise ValueError(f"max_rel_l2: expected a value in (0, 1), got {self.max_rel_l2}")
        if self.min_cosine is not None and not -1 < self.min_cosine < 1:
            raise ValueError(f"min_cosine: expected a value in (-1, 1), got {self.min_cosine}")

    def met(self, error: dict[str, float]) -> bool:
        return ((self.max_rel_l2 is None or error["rel_l2"] <= self.max_rel_l2)
                and (self.min_cosine is None or error["cosine_min"] >= self.min_cosine))

    def describe(self) -> str:
        parts = [f"rel_l2 <= {self.max_rel_l2:g}" if self.max_rel_l2 is not None else "",
                 f"cosine_min >= {self.min_cosine:g}" if self.min_cosine is not None else ""]
        return " and ".join(p for p in parts if p)


def held_out_error(runner: Runner, inputs: Pairs, references: Sequence[np.ndarray]) -> dict[str, float]:
    """Worst relative L2 error and worst per-pixel cosine of ``runner`` over the held-out images."""
    results = [parity(runner(image, feats), ref) for (image, feats), ref in zip(inputs, references)]
    return {"rel_l2": max(r["rel_l2"] for r in results), "cosine_min": min(r["cosine_min"] for r in results)}


@dataclass
class SearchResult:
    """What the search found: the layers kept in float (most sensitive first), the error with
    every layer in INT8 and with those kept, each layer's sensitivity (the error left with it alone
    in float; only measured when the all-INT8 artifact missed the bound) and how many artifacts
    were built."""

    bound: AccuracyBound
    float_layers: list[str]
    all_int8_error: dict[str, float]
    final_error: dict[str, float]
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)
    artifacts_built: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"bound": self.bound.describe(), "float_layers": self.float_layers,
                "all_int8_error": self.all_int8_error, "final_error": self.final_error,
                "sensitivity": self.sensitivity, "artifacts_built": self.artifacts_built,
                "seconds": round(self.seconds, 1)}


def search_float_layers(build: Callable[[Sequence[str]], Runner], layers: Sequence[str], bound: AccuracyBound,
                        inputs: Pairs, references: Sequence[np.ndarray], progress: bool = True) -> SearchResult:
    """The fewest of ``layers`` to keep in float for ``bound`` to hold on ``inputs`` (against the
    float32 ``references``), chosen greedily by sensitivity. ``build(float_layers)`` makes and loads
    the artifact with those layers in float. Raises ValueError when even every layer in float
    misses the bound (the error then is not the quantization's)."""
    from tqdm import tqdm

    start = time.perf_counter()
    built = 0

    def error_with(float_layers: Sequence[str]) -> dict[str, float]:
        nonlocal built
        built += 1
        return held_out_error(build(float_layers), inputs, references)

    all_int8 = error_with([])
    if bound.met(all_int8):
        return SearchResult(bound, [], all_int8, all_int8, artifacts_built=built, seconds=time.perf_counter() - start)
    sensitivity = {}
    for layer in tqdm(layers, desc="int8 layer sensitivity", unit="layer", disable=not progress):
        sensitivity[layer] = error_with([layer])
    # Most sensitive first: the layer whose return to float leaves the smallest error.
    ranked = sorted(layers, key=lambda name: (-sensitivity[name]["cosine_min"], sensitivity[name]["rel_l2"])
                    if bound.max_rel_l2 is None else (sensitivity[name]["rel_l2"], -sensitivity[name]["cosine_min"]))
    kept: list[str] = []
    error = all_int8
    for layer in ranked:
        kept.append(layer)
        error = sensitivity[layer] if len(kept) == 1 else error_with(kept)
        if bound.met(error):
            return SearchResult(bound, kept, all_int8, error, sensitivity, built, time.perf_counter() - start)
    raise ValueError(f"max_rel_l2/min_cosine: {bound.describe()} is not met even with every convolution in float "
                     f"(rel_l2 {error['rel_l2']:.3g}, cosine_min {error['cosine_min']:.6f} on the held-out images): "
                     "the remaining error is not the INT8 convolutions'; loosen the bound or drop --int8")

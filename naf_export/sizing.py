"""The one place that checks an export's sizes, and its peak memory before anything is allocated.

Sizes must fit NAF (:func:`check_sizes`: messages name the option); the memory a run will need
is estimated from the sizes (:func:`estimate_peak_bytes`) and compared with this machine's
memory (:func:`check_memory`): a run that cannot fit in physical memory plus swap is refused
before it starts instead of dying in an 80 GB allocation; one that needs more than is free now
gets a warning.
"""

from __future__ import annotations

import os
import warnings

from .config import ExportConfig

__all__ = ["MemoryInfo", "check_memory", "check_sizes", "encoder_size", "estimate_peak_bytes", "memory_info"]


def _pair(name: str, value: object, minimum: int, why: str) -> tuple[int, int]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name}: expected two ints (height, width), got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{name}: expected at least {minimum}x{minimum} ({why}), got {value[0]}x{value[1]}")
    return int(value[0]), int(value[1])


def check_sizes(config: ExportConfig, *, num_heads: int, kernel_size: int) -> None:
    """Raise ValueError naming the option when ``config`` does not fit a NAF with ``num_heads``
    attention heads and a ``kernel_size`` window."""
    _pair("image_size", config.image_size, 2, "the 3x3 convolutions pad by reflection")
    feature = _pair("feature_size", config.feature_size, kernel_size, "the attention window")
    output = _pair("output_size", config.output_size, 1, "")
    channels = config.channels
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1 or channels % num_heads:
        raise ValueError(f"channels: expected a positive multiple of {num_heads} (NAF's attention heads), got {channels!r}")
    if output[0] < feature[0] or output[1] < feature[1]:
        raise ValueError(f"output_size: expected at least the feature size {feature[0]}x{feature[1]} (NAF only "
                         f"upsamples), got {output[0]}x{output[1]}")


def encoder_size(config: ExportConfig) -> tuple[int, int]:
    """The image size the encoder runs at: the release's resize rule (DESIGN.md section 1)."""
    (ih, iw), (oh, ow) = config.image_size, config.output_size
    if ih > 4 * oh or iw > 4 * ow:
        return min(ih, 4 * oh, 4 * ow), min(iw, 4 * ow, 4 * oh)
    return ih, iw


#: Peak-memory model of one export run (PyTorch reference and the artifact's runtime in one
#: process, batch 1), in live float32 maps of each kind: fitted to the peak RSS of whole runs
#: (scripts/bench_run_memory.py; docs/BENCHMARKS.md, "Peak memory of a run") and rounded up, so
#: that it stays 1.1-1.5x above every measurement there.
_BASE_BYTES = 600 * 2**20  # interpreter, torch, runtimes, weights
_ENCODER_MAPS = 7  # (128, He, We) maps of the image encoder
_QUERY_MAPS = 2  # (256, H, W): pooled features, RoPE queries
_OUTPUT_MAPS = 3  # (C, H, W): runtime and reference outputs, parity's float64 bands


def estimate_peak_bytes(config: ExportConfig, batch: int = 1) -> int:
    """Estimated peak resident memory of a run on ``config`` at ``batch``."""
    he, we = encoder_size(config)
    oh, ow = config.output_size
    maps = (_ENCODER_MAPS * 128 * he * we + _QUERY_MAPS * 256 * oh * ow + _OUTPUT_MAPS * config.channels * oh * ow)
    return _BASE_BYTES + 4 * batch * maps


class MemoryInfo:
    """This machine's memory in bytes: ``total`` physical + swap, ``available`` now (None where
    the platform does not say)."""

    def __init__(self, total: int | None, available: int | None) -> None:
        self.total, self.available = total, available


def memory_info() -> MemoryInfo:
    fields: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if "MemTotal" in fields:
        swap_total, swap_free = fields.get("SwapTotal", 0), fields.get("SwapFree", 0)
        available = fields.get("MemAvailable", fields.get("MemFree", 0)) + swap_free
        return MemoryInfo(fields["MemTotal"] + swap_total, available)
    try:
        return MemoryInfo(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), None)
    except (AttributeError, OSError, ValueError):
        return MemoryInfo(None, None)


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def check_memory(config: ExportConfig, batch: int = 1, info: MemoryInfo | None = None) -> int:
    """Refuse (ValueError naming the sizes) a run whose estimated peak memory exceeds this machine's
    physical memory plus swap; warn when it exceeds what is available now. Returns the estimate."""
    need = estimate_peak_bytes(config, batch)
    info = info or memory_info()
    sizes = (f"image_size {config.image_size[0]}x{config.image_size[1]}, output_size "
             f"{config.output_size[0]}x{config.output_size[1]}, channels {config.channels}")
    if info.total is not None and need > info.total:
        raise ValueError(f"output_size/image_size: {sizes} need about {_gb(need)} of memory at the peak, more than "
                         f"this machine has ({_gb(info.total)} with swap); choose smaller sizes")
    if info.available is not None and need > info.available:
        warnings.warn(f"{sizes} need about {_gb(need)} of memory at the peak and {_gb(info.available)} is free now; "
                      "the run may be slow or killed", RuntimeWarning, stacklevel=2)
    return need

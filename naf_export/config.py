"""The sizes an artifact is built for. Imports nothing heavy, so runners can use it without torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ExportConfig", "check_count", "check_threads", "config_from_shapes"]


@dataclass(frozen=True)
class ExportConfig:
    """Sizes an artifact is built for (the official protocol at ratio 2 by default)."""

    image_size: tuple[int, int] = (448, 448)
    feature_size: tuple[int, int] = (28, 28)
    channels: int = 384
    output_size: tuple[int, int] = (56, 56)


def config_from_shapes(image: Sequence, features: Sequence, output: Sequence, source: str = "artifact") -> ExportConfig:
    """The sizes an artifact was built for, from its (B, 3, Hi, Wi), (B, C, h, w) and (B, C, H, W)
    shapes; only the batch may be symbolic."""
    try:
        dims = [int(d) for d in (*image[2:], *features[1:], *output[2:])]
        if len(dims) != 7 or min(dims) < 1:
            raise ValueError
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"model: {source} needs fixed image, feature and output sizes (only the batch may be symbolic), "
            f"got image {list(image)}, features {list(features)}, output {list(output)}"
        ) from exc
    return ExportConfig((dims[0], dims[1]), (dims[3], dims[4]), dims[2], (dims[5], dims[6]))


def check_count(name: str, value: object, minimum: int = 1, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an int in [minimum, maximum], else ValueError naming ``name`` (a bool is not
    a count)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (
            maximum is not None and value > maximum):
        upper = f"..{maximum}" if maximum is not None else " or more"
        raise ValueError(f"{name}: expected an int {minimum}{upper}{hint}, got {value!r}")
    return value


def check_threads(threads: object) -> int:
    """Runtime threads: 0 (all cores) up to this machine's core count."""
    import os

    cores = os.cpu_count() or 1
    return check_count("threads", threads, 0, cores, f" (0: all cores; this machine has {cores})")

"""Loading NAF weights, safely: release-format ``.pth`` files, ``.safetensors`` files, or the release
weights by name."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from .model import NAF

__all__ = [
    "RELEASE", "UNTRAINED_SEED", "CheckpointError", "convert_checkpoint", "load_naf", "load_state_dict",
    "resolve_checkpoint", "validate_checkpoint_file",
]

#: Seed of the stand-in weights used when no checkpoint is given.
UNTRAINED_SEED = 0

_WRAPPER_KEYS = ("state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint file that is unreadable, unsafe, or does not match NAF's state dict."""


#: ``--checkpoint`` / ``load_naf`` name of the release weights (downloaded, see naf_export.release).
RELEASE = "release"
SAFETENSORS_SUFFIX = ".safetensors"


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint: {path!r} is not a readable safetensors file ({exc})") from exc


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint: a ``.safetensors`` file (no pickle at all), or a release-format
    PyTorch file, a bare state dict or one wrapped under ``state_dict`` / ``model``, of which only
    tensors and plain containers are unpickled (``weights_only=True``): a file that would execute
    code is refused."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint: {path!r} is a directory; expected a checkpoint file (naf_release.pth)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint: no such file {path!r}")
    if path.endswith(SAFETENSORS_SUFFIX):
        return _load_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The unpickler names the callable it blocked; garbage bytes fail as "pickles" too.
        blocked = [line.strip() for line in str(exc).splitlines() if "global" in line.lower()]
        if not blocked:
            raise CheckpointError(
                f"checkpoint: {path!r} is not a readable PyTorch checkpoint ({exc})"
            ) from exc
        raise CheckpointError(
            f"checkpoint: {path!r} was refused: it holds objects other than tensors and plain "
            f"containers, and loading it would run code ({blocked[0]})"
        ) from exc
    except Exception as exc:  # zip/EOF/format errors of corrupt files come in many types
        raise CheckpointError(
            f"checkpoint: {path!r} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint: {path!r} does not hold a state dict (a mapping of names to tensors), "
            f"bare or under one of {list(_WRAPPER_KEYS)}"
        )
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _check_against(model: NAF, state: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)}"
        for k in set(expected) & set(state)
        if expected[k].shape != state[k].shape
    )
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if misshaped:
        problems.append("mis-shaped keys: " + "; ".join(misshaped))
    nonfinite = sorted(
        k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()
    )
    if nonfinite:
        problems.append("keys with NaN or infinite values: " + ", ".join(nonfinite))
    if problems:
        raise CheckpointError(
            f"checkpoint: {source} does not match the NAF release state dict.\n  "
            + "\n  ".join(problems)
        )


def validate_checkpoint_file(path: str | os.PathLike[str], source: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` after checking it is exactly NAF's (keys, shapes, finite values);
    CheckpointError otherwise, naming ``source`` (default: the path)."""
    state = load_state_dict(path)
    _check_against(NAF(), state, source or repr(os.fspath(path)))
    return state


def resolve_checkpoint(checkpoint: str | os.PathLike[str] | None, progress: bool = True) -> Path | None:
    """The file ``checkpoint`` names: ``"release"`` is the release weights (downloaded into torch
    hub's cache on first use; a file of that name needs ``./release``), anything else a path."""
    if checkpoint is None:
        return None
    if os.fspath(checkpoint) == RELEASE:
        from .release import release_checkpoint

        return release_checkpoint(progress=progress)
    return Path(checkpoint)


def convert_checkpoint(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Write ``source`` (a release ``.pth``, ``"release"``, or any checkpoint ``load_naf`` reads) as
    a ``.safetensors`` file, after checking it is NAF's state dict; return its path. Loading it
    needs no pickle."""
    from safetensors.torch import save_file

    from .release import file_sha256

    destination = Path(destination)
    if destination.suffix != SAFETENSORS_SUFFIX:
        raise ValueError(f"destination: expected a path ending in {SAFETENSORS_SUFFIX}, got {os.fspath(destination)!r}")
    path = resolve_checkpoint(source)
    state = validate_checkpoint_file(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, os.fspath(partial),
                  metadata={"format": "pt", "model": "NAF", "source_sha256": file_sha256(path)})
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def load_naf(checkpoint: str | os.PathLike[str] | None = None) -> NAF:
    """Build NAF in eval mode with the release's architecture.

    ``checkpoint``: ``"release"`` (the release weights, downloaded on first use), or the path of a
    release-format ``.pth`` or a ``.safetensors`` file; its weights are loaded strictly (every key
    and shape must match the release). Without, return seeded untrained weights and warn: outputs
    are then not meaningful features, only suitable for testing the export pipeline.
    """
    model = NAF()
    if checkpoint is None:
        generator_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(UNTRAINED_SEED)
            model = NAF()
        finally:
            torch.random.set_rng_state(generator_state)
        message = (
            "NAF has UNTRAINED weights (seeded stand-in): no checkpoint was given. Outputs are "
            "not meaningful features. Pass the release checkpoint naf_release.pth to get the "
            "real model."
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        return model.eval()
    model.load_state_dict(validate_checkpoint_file(resolve_checkpoint(checkpoint)), strict=True)
    return model.eval()

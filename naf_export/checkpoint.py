"""Loading NAF weights from release-format checkpoints, safely."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping

import torch

from .model import NAF

__all__ = ["CheckpointError", "load_naf", "load_state_dict", "UNTRAINED_SEED"]

#: Seed of the stand-in weights used when no checkpoint is given.
UNTRAINED_SEED = 0

_WRAPPER_KEYS = ("state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint file that is unreadable, unsafe, or does not match NAF's state dict."""


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a release-format checkpoint: a bare state dict or one wrapped under
    ``state_dict`` / ``model``. Only tensors and plain containers are unpickled
    (``weights_only=True``): a file that would execute code is refused."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint: {path!r} is a directory; expected a checkpoint file (naf_release.pth)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint: no such file {path!r}")
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


def load_naf(checkpoint: str | os.PathLike[str] | None = None) -> NAF:
    """Build NAF in eval mode with the release's architecture.

    With ``checkpoint``, load its weights (strict: every key and shape must match the release).
    Without, return seeded untrained weights and warn: outputs are then not meaningful features,
    only suitable for testing the export pipeline.
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
    state = load_state_dict(checkpoint)
    _check_against(model, state, repr(os.fspath(checkpoint)))
    model.load_state_dict(state, strict=True)
    return model.eval()

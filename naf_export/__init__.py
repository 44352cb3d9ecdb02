"""naf-export: take NAF (Neighborhood Attention Filtering) from PyTorch to the edge.

Public names load lazily so that runtimes (``naf_export.runners``) work without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "NAF": "model",
    "CheckpointError": "checkpoint",
    "load_naf": "checkpoint",
    "cross_scale_neighborhood_attention": "attention",
    "nearest_exact_source": "attention",
    "neighborhood_index": "attention",
    "export_onnx": "onnx_export",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'naf_export' has no attribute {name!r}")

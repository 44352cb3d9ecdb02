"""Reports as strict JSON: NaN and infinities, which ``json.dumps`` would write as the non-JSON
tokens ``NaN``/``Infinity``, are written as ``null``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["json_safe", "write_json"]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (also in nested dicts, lists and tuples) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as indented strict JSON (see :func:`json_safe`); return the path."""
    path = Path(path)
    path.write_text(json.dumps(json_safe(value), indent=2, allow_nan=False) + "\n")
    return path

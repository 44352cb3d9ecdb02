"""One runner per target: load an artifact and run it on (image, features) numpy batches.

Every runner is called as ``runner(image, features) -> output`` with float32 numpy arrays
(1, 3, Hi, Wi), (1, C, h, w) -> (1, C, H, W), and carries ``config``: the sizes the artifact was
built for, read from the artifact itself.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ARTIFACT_KINDS", "artifact_kind", "open_artifact"]

#: File suffix -> runtime that runs it.
ARTIFACT_KINDS = {
    ".onnx": "onnxruntime",
    ".xml": "openvino",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".mlpackage": "coreml",
    ".mlmodel": "coreml",
}


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """The runtime for ``path``, from its suffix; a clear error for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in ARTIFACT_KINDS:
        raise ValueError(
            f"artifact: {os.fspath(path)!r} is not a naf-export artifact; expected a file ending in "
            f"{', '.join(ARTIFACT_KINDS)}"
        )
    return ARTIFACT_KINDS[suffix]


def open_artifact(path: str | os.PathLike[str], *, plugin: str | os.PathLike[str] | None = None, threads: int = 0):
    """A runner for any artifact this project writes (ONNX, OpenVINO IR, TensorRT engine, Core ML
    package). A runner may carry ``runtime_label``, naming what runs it where its kind alone would
    mislead (a Core ML package evaluated off macOS)."""
    kind = artifact_kind(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"artifact: no such {'package' if kind == 'coreml' else 'file'} {os.fspath(path)!r}")
    if kind == "onnxruntime":
        from .onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, plugin=plugin, threads=threads)
    if kind == "openvino":
        from .openvino import OpenVinoRunner

        return OpenVinoRunner(path, extension=plugin, threads=threads)
    if kind == "tensorrt":
        from .tensorrt import TensorRtRunner

        return TensorRtRunner(path, plugin=plugin)
    if plugin is not None:
        raise ValueError(f"plugin: {os.fspath(path)!r} is a Core ML model, which loads no plugin library; drop --plugin")
    from .coreml import CoreMLRunner

    return CoreMLRunner(path)

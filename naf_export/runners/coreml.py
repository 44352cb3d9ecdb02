"""Run Core ML packages (``.mlpackage``): with Core ML itself on macOS (``MLModel.predict``), and
elsewhere by evaluating the saved ML Program op by op (:mod:`naf_export.mil_eval`), which checks
what the package computes but is not the Core ML runtime (no device compile, no ANE/GPU)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np

from ..config import config_from_shapes
from ..contract import INPUT_NAMES, OUTPUT_NAME
from ..errors import ArtifactError, TargetUnavailable

__all__ = ["BACKENDS", "COREML_INSTALL", "CoreMLRunner", "coreml_runtime_available", "import_coremltools"]

COREML_INSTALL = "pip install 'naf-export[coreml]'"
#: ``auto``: Core ML where it runs (macOS), else the MIL evaluator; ``coreml``: Core ML only;
#: ``mil``: the MIL evaluator everywhere.
BACKENDS = ("auto", "coreml", "mil")
MIL_LABEL = "coreml (MIL evaluation, not the Core ML runtime)"
COREML_LABEL = "coreml (Core ML runtime)"


def import_coremltools():
    """``coremltools``, imported without its import-time warnings (on Linux it logs that its
    macOS-only prediction library is missing, and that the installed torch/scikit-learn versions
    are untested: none of which this package uses). TargetUnavailable when it is not installed."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import coremltools
    except ImportError as exc:
        raise TargetUnavailable(f"coremltools is not installed ({exc}); {COREML_INSTALL}") from exc
    finally:
        logger.setLevel(level)
    return coremltools


def coreml_runtime_available() -> bool:
    """Whether Core ML can predict here: macOS with coremltools' native prediction library."""
    if sys.platform != "darwin":
        return False
    try:
        import_coremltools()
        from coremltools import libcoremlpython  # noqa: F401
    except (ImportError, TargetUnavailable):
        return False
    return True


def _array_inputs(spec) -> dict[str, tuple[list[int], str]]:
    from coremltools.proto import FeatureTypes_pb2

    names = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    features = {}
    for feature in (*spec.description.input, *spec.description.output):
        kind = feature.type.WhichOneof("Type")
        if kind != "multiArrayType":
            features[feature.name] = ([], kind or "unknown")
            continue
        array = feature.type.multiArrayType
        features[feature.name] = (list(array.shape), names.Name(array.dataType))
    return features


class CoreMLRunner:
    """An exported NAF ``.mlpackage`` as ``runner(image, features) -> upsampled``.

    ``backend``: one of :data:`BACKENDS`; ``runtime_label`` says which one runs. ``compute_units``:
    Core ML's (``ALL``, ``CPU_ONLY``, ``CPU_AND_GPU``, ``CPU_AND_NE``; Core ML backend only).
    ``config`` holds the sizes the package was built for, read from its input and output shapes.
    """

    def __init__(self, path: str | os.PathLike[str], *, backend: str = "auto", compute_units: str = "ALL") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"model: no such package {os.fspath(path)!r}")
        if path.suffix == ".mlpackage" and not (path / "Manifest.json").is_file():
            raise ValueError(f"model: {os.fspath(path)!r} is not a Core ML package (expected a folder with "
                             "Manifest.json)")
        ct = import_coremltools()
        if backend == "auto":
            backend = "coreml" if coreml_runtime_available() else "mil"
        if backend == "coreml" and not coreml_runtime_available():
            raise TargetUnavailable("Core ML predictions run only on macOS (coremltools' libcoremlpython); "
                                    "use backend='mil' to evaluate the package's program here")
        self.path, self.backend = path, backend
        self.runtime_label = COREML_LABEL if backend == "coreml" else MIL_LABEL
        try:
            spec = ct.utils.load_spec(os.fspath(path))
        except Exception as exc:  # noqa: BLE001 - coremltools raises assorted errors for broken packages
            raise ArtifactError(f"model: coremltools cannot read {os.fspath(path)!r}: {exc}") from exc
        self.config = self._check_interface(spec)
        if backend == "coreml":
            if compute_units not in ct.ComputeUnit.__members__:
                raise ValueError(f"compute_units: expected one of {tuple(ct.ComputeUnit.__members__)}, "
                                 f"got {compute_units!r}")
            try:
                self._model = ct.models.MLModel(os.fspath(path), compute_units=ct.ComputeUnit[compute_units])
            except Exception as exc:  # noqa: BLE001 - Core ML's compile errors
                raise ArtifactError(f"model: Core ML cannot load {os.fspath(path)!r}: {exc}") from exc
        else:
            from ..mil_eval import MilEvaluator, load_program

            self._evaluator = MilEvaluator(load_program(path))

    def _check_interface(self, spec):
        """The config read from the model's description; ValueError unless it has float32 inputs
        ``image`` and ``features`` and float32 output ``upsampled`` of rank 4."""
        features = _array_inputs(spec)
        expected = (*INPUT_NAMES, OUTPUT_NAME)
        inputs = [f.name for f in spec.description.input]
        outputs = [f.name for f in spec.description.output]
        if sorted(inputs) != sorted(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
            raise ValueError(f"model: expected inputs {list(INPUT_NAMES)} and output {OUTPUT_NAME!r}, "
                             f"{os.fspath(self.path)!r} has inputs {inputs} and outputs {outputs}")
        for name in expected:
            shape, dtype = features[name]
            if dtype != "FLOAT32" or len(shape) != 4:
                raise ValueError(f"model: {name!r} must be a float32 (B, C, H, W) array, {os.fspath(self.path)!r} "
                                 f"declares {dtype} of shape {shape}")
        self._shapes = {name: tuple(features[name][0]) for name in INPUT_NAMES}
        return config_from_shapes(features["image"][0], features["features"][0], features[OUTPUT_NAME][0],
                                  source=repr(os.fspath(self.path)))

    def _check(self, name: str, value: np.ndarray) -> np.ndarray:
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name}: expected a float array, got dtype {array.dtype}")
        if array.shape != self._shapes[name]:
            form = "(B, 3, Hi, Wi)" if name == "image" else "(B, C, h, w)"
            raise ValueError(f"{name}: expected shape {self._shapes[name]} {form} (the package's fixed shape), "
                             f"got {array.shape}")
        return np.ascontiguousarray(array, dtype=np.float32)

    def __call__(self, image: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Upsampled features (1, C, H, W) as a new float32 array."""
        feeds = {"image": self._check("image", image), "features": self._check("features", features)}
        try:
            if self.backend == "coreml":
                output = self._model.predict(feeds)[OUTPUT_NAME]
            else:
                output = self._evaluator(**feeds)[OUTPUT_NAME]
        except (ArtifactError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - Core ML's / numpy's runtime failures
            raise ArtifactError(f"model: {self.runtime_label} failed running {os.fspath(self.path)!r}: {exc}") from exc
        return np.array(output, dtype=np.float32, copy=True)

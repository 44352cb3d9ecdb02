"""Run exported ONNX models in ONNX Runtime, with the naf-export plugin when the model needs it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx

from ..config import check_threads, config_from_shapes
from ..contract import ATTENTION_DOMAIN, ATTENTION_VERSION, INPUT_NAMES, OUTPUT_NAME, STAGES_KEY
from ..errors import ArtifactError

__all__ = ["OnnxRuntimeRunner", "needs_plugin", "uses_naf_domain"]


def uses_naf_domain(model: onnx.ModelProto) -> bool:
    """Whether the model imports the ``naf`` domain (the fused nodes). Raises ValueError when it
    imports a version of it other than the one the plugins implement: the runtimes would run it
    with version 1's kernels (neither ONNX Runtime nor OpenVINO lets a plugin see the version)."""
    versions = [op.version for op in model.opset_import if op.domain == ATTENTION_DOMAIN]
    if any(v != ATTENTION_VERSION for v in versions):
        raise ValueError(f"model: imports the {ATTENTION_DOMAIN!r} operator set version {versions[0]}; the naf-export "
                         f"plugins implement version {ATTENTION_VERSION}")
    return bool(versions)


def needs_plugin(model_path: str | os.PathLike[str]) -> bool:
    """Whether the ONNX file uses the ``naf`` domain (the fused attention node)."""
    try:
        model = onnx.load(os.fspath(model_path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends for corrupt files
        raise ValueError(
            f"model: ONNX Runtime cannot load {os.fspath(model_path)!r}: not a readable ONNX file ({exc})"
        ) from exc
    return uses_naf_domain(model)


class OnnxRuntimeRunner:
    """An ONNX Runtime session on an exported NAF model.

    ``plugin`` is the custom-op library path; by default the one built with this package is used
    when the model contains the fused attention node. ONNX Runtime's memory pattern (one
    pre-planned block for all intermediates) is always off: at 448x448, C=384 it costs a third
    more peak RSS (2.06 vs 1.38 GB) for ~4 % speed, and nothing at small sizes. ``lean_memory``
    also turns the CPU memory arena off: buffers go back to the system after each run, peak RSS
    1.38 -> 0.83 GB at 448x448 for ~15 % more time in page faults.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        plugin: str | os.PathLike[str] | None = None,
        providers: list[str] | None = None,
        threads: int = 0,
        lean_memory: bool = False,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model: no such file {str(path)!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = check_threads(threads)
        options.enable_mem_pattern = False
        options.enable_cpu_mem_arena = not lean_memory
        self.path = path
        if needs_plugin(path):
            from ..native import check_plugin, ort_library_path

            try:
                plugin = check_plugin(ort_library_path() if plugin is None else plugin, "onnxruntime")
                options.register_custom_ops_library(os.fspath(plugin))
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{exc}; build it with 'pip install .' or export with --attention portable") from exc
            except Exception as exc:  # noqa: BLE001 - ORT raises its own types for a library it cannot load
                if isinstance(exc, ValueError):
                    raise
                raise ValueError(f"plugin: ONNX Runtime cannot load {os.fspath(plugin)!r}: {exc}") from exc
        self._options, self._providers = options, providers or ["CPUExecutionProvider"]
        self._stage_session = None
        self.session = self._new_session(str(path))
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(INPUT_NAMES):
            raise ValueError(
                f"model: expected inputs {list(INPUT_NAMES)}, {str(path)!r} has {names}"
            )
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        shapes = {v.name: v.shape for v in [*self.session.get_inputs(), *self.session.get_outputs()]}
        if OUTPUT_NAME not in shapes:
            raise ValueError(f"model: expected output {OUTPUT_NAME!r}, {str(path)!r} has {list(shapes)[2:]}")
        self.config = config_from_shapes(*(shapes[n] for n in (*INPUT_NAMES, OUTPUT_NAME)), source=repr(str(path)))

    def _new_session(self, model: str | bytes):
        import onnxruntime as ort

        try:
            return ort.InferenceSession(model, self._options, providers=self._providers)
        except Exception as exc:  # ORT raises several exception types for bad models
            raise ValueError(f"model: ONNX Runtime cannot load {str(self.path)!r}: {exc}") from exc

    @property
    def stage_names(self) -> dict[str, str]:
        """Stage -> tensor name of NAF.stages() in this model (empty for models without the record)."""
        record = self.session.get_modelmeta().custom_metadata_map.get(STAGES_KEY)
        return json.loads(record) if record else {}

    def run_stages(self, image: np.ndarray, features: np.ndarray) -> dict[str, np.ndarray]:
        """NAF.stages() as this artifact computes them (float32 arrays): a second session on the same
        model with the stage tensors added as outputs (ONNX Runtime returns graph outputs only)."""
        names = self.stage_names
        if not names:
            raise ValueError(f"stages: {str(self.path)!r} does not record its stage tensors (export it again with "
                             "this naf-export)")
        if self._stage_session is None:
            model = onnx.load(os.fspath(self.path))
            present = {o.name for o in model.graph.output}
            model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names.values()) if n not in present)
            self._stage_session = self._new_session(model.SerializeToString())
        fetched = self._stage_session.run(list(names.values()), self._feeds(image, features))
        return {stage: np.asarray(value, dtype=np.float32) for stage, value in zip(names, fetched)}

    def _feeds(self, image: np.ndarray, features: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"image": image, "features": features}
        for name, value in feeds.items():
            dtype = np.float16 if self.input_types[name] == "tensor(float16)" else np.float32
            feeds[name] = np.ascontiguousarray(value, dtype=dtype)
        return feeds

    def __call__(self, image: np.ndarray, features: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run([OUTPUT_NAME], self._feeds(image, features))[0]
        except Exception as exc:  # noqa: BLE001 - ORT's runtime failures (a kernel refusing its inputs, ...)
            raise ArtifactError(f"model: ONNX Runtime failed running {str(self.path)!r}: {exc}") from exc
        return out.astype(np.float32, copy=False)

"""Run exported NAF models (ONNX or OpenVINO IR) in OpenVINO on CPU, with the naf-export extension
library (``libnaf_openvino.so``) when the model contains the fused attention operation."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

from ..config import check_threads, config_from_shapes
from ..contract import ATTENTION_OP, INPUT_NAMES, OUTPUT_NAME, STAGES_KEY
from ..errors import ArtifactError

__all__ = ["IR_PRECISION_KEY", "STAGES_RT_KEY", "OpenVinoRunner", "add_extension", "check_extension", "extension_library", "ir_precision",
           "is_quantized", "needs_extension"]

#: IR version string of the operation (plugins/openvino: OPENVINO_OP(..., "naf_opset1")).
IR_OPSET = "naf_opset1"
_BUILD_HINT = (
    "it is built with the package (`pip install .` from the naf-export repository, which needs the "
    "`openvino` wheel at build time) or by CMake: `cmake -S <repo> -B build "
    "-DOpenVINO_DIR=$(python -c \"import openvino,os;print(os.path.dirname(openvino.__file__))\")/cmake "
    "&& cmake --build build --target naf_openvino`, then set NAF_EXPORT_LIB_DIR=build/lib; "
    "or export with --attention portable, which needs no extension"
)
_MODEL_SUFFIXES = (".onnx", ".xml")


def needs_extension(model_path: str | os.PathLike[str]) -> bool:
    """Whether an ONNX file uses the ``naf`` domain, or an IR file the ``naf_opset1`` operation."""
    path = Path(model_path)
    if path.suffix == ".xml":
        # The layer list precedes the (possibly long) rt_info: a plain text scan is enough.
        text = path.read_text(errors="replace")
        return f'version="{IR_OPSET}"' in text  # any naf operation (attention, AxialRoPE)
    from .onnxruntime import needs_plugin

    return needs_plugin(path)


#: Where naf-export's IRs record the precision they were written for (rt_info naf_export/precision)
#: and the tensors of NAF.stages() (naf_export/stages, JSON as the ONNX metadata STAGES_KEY).
IR_PRECISION_KEY = ("naf_export", "precision")
STAGES_RT_KEY = ("naf_export", "stages")


def _has_rt(info, key: tuple[str, str]) -> bool:
    try:
        info[key[0]][key[1]]
    except Exception:  # noqa: BLE001 - RTMap raises its own error for a missing key
        return False
    return True


def ir_precision(model_path: str | os.PathLike[str]) -> str | None:
    """The precision an IR was written for (fp32, fp16, bf16, int8), from its rt_info; None for an
    ONNX file or an IR without it."""
    path = Path(model_path)
    if path.suffix != ".xml":
        return None
    found = re.search(rf"<{IR_PRECISION_KEY[0]}>\s*<{IR_PRECISION_KEY[1]} value=\"(\w+)\"", path.read_text(errors="replace"))
    return found.group(1) if found else None


def is_quantized(model_path: str | os.PathLike[str]) -> bool:
    """Whether an IR holds FakeQuantize (NNCF INT8) or an ONNX file QuantizeLinear nodes."""
    path = Path(model_path)
    if path.suffix == ".xml":
        return 'type="FakeQuantize"' in path.read_text(errors="replace")
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    return any(node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for node in model.graph.node)


def _ov_release(version: str) -> str:
    """'2026.4.1-22982-e213a147257-releases/2026/4' -> '2026.4.1'."""
    return version.split("-", 1)[0]


def extension_library(extension: str | os.PathLike[str] | None = None) -> Path:
    """The extension library to load: ``extension`` when given, else the one built with the package.

    Raises FileNotFoundError naming ``libnaf_openvino.so`` and how to build it.
    """
    from ..native import check_plugin, openvino_library_path

    if extension is not None:
        try:
            return check_plugin(extension, "openvino")
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc}; {_BUILD_HINT}") from exc
    try:
        return Path(openvino_library_path())
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"plugin: this model contains the naf::{ATTENTION_OP} operation, which needs the OpenVINO "
            f"extension library libnaf_openvino.so (loaded with openvino.Core().add_extension), and none "
            f"was found ({exc}); {_BUILD_HINT}"
        ) from exc


def check_extension(library: str | os.PathLike[str]) -> None:
    """Raise ValueError when ``library`` was built against another OpenVINO release than the one
    installed (an extension only loads into the release whose headers it was compiled with)."""
    import openvino as ov

    from ..native import openvino_build_info

    info = openvino_build_info(library)
    running = _ov_release(ov.get_version())
    built = info.get("openvino_version") if info else None
    if built is not None and built != running:
        raise ValueError(
            f"plugin: {os.fspath(library)} was built against OpenVINO {built}, but OpenVINO {running} is "
            f"installed; install openvino=={built} or rebuild the extension against {running} "
            "(pip install --no-build-isolation . from the naf-export repository)"
        )


def add_extension(core, model_path: str | os.PathLike[str], extension: str | os.PathLike[str] | None = None) -> Path | None:
    """Load the extension library into ``core`` (an ``openvino.Core``) when ``model_path`` needs it;
    return its path, or None when the model has no naf operation. Errors name the library."""
    if not needs_extension(model_path):
        return None
    library = extension_library(extension)
    check_extension(library)
    try:
        core.add_extension(os.fspath(library))
    except Exception as exc:  # OpenVINO raises RuntimeError with the dlopen message
        raise ValueError(f"plugin: OpenVINO cannot load the extension library {str(library)!r}: {exc}") from exc
    return library


class OpenVinoRunner:
    """A compiled OpenVINO model (ONNX ``.onnx`` or IR ``.xml`` + ``.bin``) on an exported NAF model.

    ``extension``: the ``libnaf_openvino.so`` to load (default: the one built with this package),
    loaded only when the model contains a naf operation (the fused attention, AxialRoPE). ``threads``: inference
    threads (0: OpenVINO's default, all cores). ``cache_dir``: OpenVINO model cache; a second
    runner on the same model and settings imports the compiled blob instead of compiling
    (``loaded_from_cache`` tells which happened). ``precision_hint``: the CPU plugin's
    ``INFERENCE_PRECISION_HINT`` ("f32" keeps float32 math; None leaves the device default, which is
    bf16 on CPUs with AMX/AVX512-BF16); "auto": bf16 for IRs written for bf16, f32 for other float
    models, the device default for INT8 ones (as ``naf-export --target openvino`` compiles them). ``config`` holds the sizes the model
    was built for, read from its input and output shapes.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        extension: str | os.PathLike[str] | None = None,
        threads: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        precision_hint: str | None = "auto",
        device: str = "CPU",
    ) -> None:
        import openvino as ov

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model: no such file {str(path)!r}")
        if path.suffix not in _MODEL_SUFFIXES:
            raise ValueError(f"model: expected an ONNX (.onnx) or OpenVINO IR (.xml) file, got {str(path)!r}")
        if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
            raise FileNotFoundError(
                f"model: the IR weights {str(path.with_suffix('.bin'))!r} next to {str(path)!r} are missing"
            )
        check_threads(threads)
        self.path = path
        self.core = ov.Core()
        self.extension = add_extension(self.core, path, extension)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": os.fspath(self.cache_dir)})
        if precision_hint == "auto":
            precision_hint = None if is_quantized(path) else "bf16" if ir_precision(path) == "bf16" else "f32"
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision_hint is not None:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._config, self._device, self._stage_compiled = config, device, None
        start = time.perf_counter()
        try:
            # With a cache, compile the model object: OpenVINO keys it by the model's content, while a
            # path is keyed by its location and modification time, which change with every export
            # (each run writes through a staging folder). Without one, compiling the path skips a copy.
            source = self.core.read_model(os.fspath(path)) if self.cache_dir is not None else os.fspath(path)
            self.compiled = self.core.compile_model(source, device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError / ov exceptions for bad models
            hint = ""
            if self.extension is None and ATTENTION_OP in str(exc):
                hint = f" (the model needs the extension library libnaf_openvino.so; {_BUILD_HINT})"
            raise ValueError(f"model: OpenVINO cannot compile {str(path)!r}: {exc}{hint}") from exc
        self.compile_seconds = time.perf_counter() - start
        try:
            self.loaded_from_cache = bool(self.compiled.get_property("LOADED_FROM_CACHE"))
        except Exception:  # property unknown to an older plugin
            self.loaded_from_cache = False
        # A port may carry several tensor names; the contract's name is the one that counts.
        names = [next((n for n in i.get_names() if n in INPUT_NAMES), i.get_any_name()) for i in self.compiled.inputs]
        if sorted(names) != sorted(INPUT_NAMES):
            raise ValueError(f"model: expected inputs {list(INPUT_NAMES)}, {str(path)!r} has {names}")
        self._input_shapes = {n: i.get_partial_shape() for n, i in zip(names, self.compiled.inputs)}
        outputs = [o for o in self.compiled.outputs if OUTPUT_NAME in o.get_names()]
        if len(outputs) != 1:
            found = [sorted(o.get_names()) for o in self.compiled.outputs]
            raise ValueError(f"model: expected output {OUTPUT_NAME!r}, {str(path)!r} has {found}")

        def dims(shape) -> list[object]:
            return [d.get_length() if d.is_static else "?" for d in shape]

        self.config = config_from_shapes(dims(self._input_shapes["image"]), dims(self._input_shapes["features"]),
                                         dims(outputs[0].get_partial_shape()), source=repr(str(path)))
        self._output = outputs[0]
        self._request = self.compiled.create_infer_request()

    @property
    def stage_names(self) -> dict[str, str]:
        """Stage -> tensor name of NAF.stages() in this model: the IR's rt_info (written by
        naf-export), or an ONNX file's metadata; empty when the model does not record them."""
        if self.path.suffix == ".onnx":
            import onnx

            record = {p.key: p.value for p in onnx.load(os.fspath(self.path), load_external_data=False).metadata_props}
            text = record.get(STAGES_KEY)
        else:
            info = self.core.read_model(os.fspath(self.path)).get_rt_info()
            text = info[STAGES_RT_KEY[0]][STAGES_RT_KEY[1]].astype(str) if _has_rt(info, STAGES_RT_KEY) else None
        return json.loads(text) if text else {}

    def run_stages(self, image: np.ndarray, features: np.ndarray) -> dict[str, np.ndarray]:
        """NAF.stages() as this artifact computes them (float32 arrays), from a second compiled model
        with the stage tensors added as outputs."""
        names = self.stage_names
        if not names:
            raise ValueError(f"stages: {str(self.path)!r} does not record its stage tensors (export it again with "
                             "this naf-export)")
        if self._stage_compiled is None:
            model = self.core.read_model(os.fspath(self.path))
            model.add_outputs(list(dict.fromkeys(n for n in names.values() if n != OUTPUT_NAME)))
            self._stage_compiled = self.core.compile_model(model, self._device, self._config)
        feeds = {"image": self._check("image", image), "features": self._check("features", features)}
        try:
            results = self._stage_compiled.create_infer_request().infer(feeds)
        except Exception as exc:  # noqa: BLE001 - OpenVINO's runtime failures
            raise ArtifactError(f"model: OpenVINO failed running {str(self.path)!r}: {exc}") from exc
        by_name = {name: value for port, value in results.items() for name in port.get_names()}
        return {stage: np.array(by_name[name], dtype=np.float32) for stage, name in names.items()}

    def _check(self, name: str, value: np.ndarray) -> np.ndarray:
        import openvino as ov

        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{name}: expected a float array, got dtype {array.dtype}")
        expected = self._input_shapes[name]
        form = "(B, 3, Hi, Wi)" if name == "image" else "(B, C, h, w)"
        if array.ndim != 4 or not expected.compatible(ov.PartialShape(list(array.shape))):
            raise ValueError(f"{name}: expected shape {expected} {form}, got {tuple(array.shape)}")
        return np.ascontiguousarray(array, dtype=np.float32)

    def __call__(self, image: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Upsampled features (B, C, H, W) as a new float32 array."""
        feeds = {"image": self._check("image", image), "features": self._check("features", features)}
        try:
            self._request.infer(feeds, share_inputs=True)
        except Exception as exc:  # noqa: BLE001 - OpenVINO's runtime failures (the extension refusing its inputs, ...)
            raise ArtifactError(f"model: OpenVINO failed running {str(self.path)!r}: {exc}") from exc
        # Copy: the request's output buffer is reused by the next call.
        return np.array(self._request.get_tensor(self._output).data, dtype=np.float32, copy=True)

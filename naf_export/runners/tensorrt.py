"""Build and run TensorRT engines of exported NAF models (TensorRT 10 Python API).

``tensorrt`` and CUDA are imported only inside functions, so importing this module works on
machines without them; every entry point raises :class:`naf_export.errors.TargetUnavailable`
(naming what to install) when they are missing.

* :func:`load_plugin` finds ``libnaf_tensorrt.so`` and registers its creator with TensorRT's
  plugin registry (once per process: TensorRT refuses to load a library whose creators are
  already registered).
* :func:`build_engine` parses the fused ONNX (the ONNX parser's plugin fallback maps the
  ``naf::CrossScaleNeighborhoodAttention`` node to the plugin by op type), sets the precision,
  an optimisation profile for a dynamic batch and a persistent timing cache, and writes the
  serialized engine plus a small JSON sidecar describing how it was built.
* :class:`TensorRtRunner` deserializes an engine and runs it on numpy (image, features) batches
  through PyTorch CUDA tensors, returning float32 numpy like the ONNX Runtime runner.

Precision flags (TensorRT 10):

* ``fp32``: weakly typed network, ``BuilderFlag.TF32`` cleared so convolutions and matrix
  products stay in IEEE float32.
* ``fp16``: weakly typed network with ``BuilderFlag.FP16``: TensorRT may run any layer, the
  plugin included (it supports float16 I/O), in float16; network inputs and output stay float32.
* ``int8``: the QDQ model from :func:`naf_export.quantize.quantize_int8` built as a *strongly
  typed* network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the Q/DQ pairs fix where
  INT8 is used and every other tensor keeps its ONNX type (float32). This is TensorRT 10's
  explicit-quantization path; ``BuilderFlag.INT8``/``FP16`` are not set (they are invalid on
  strongly typed networks and ``INT8`` only drives the deprecated implicit calibration).
  ``BuildOptions(strongly_typed=False)`` instead builds the weakly typed network with
  ``BuilderFlag.INT8``, for TensorRT builds that predate strong typing.

No ONNX parser flag is set: the exported graph has no InstanceNormalization (GroupNorm is written
as reductions), so ``OnnxParserFlag.NATIVE_INSTANCENORM`` changes nothing.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_from_shapes
from ..contract import ATTENTION_OP, ATTENTION_VERSION, INPUT_NAMES, OUTPUT_NAME
from ..errors import ArtifactError, TargetUnavailable

__all__ = [
    "PLUGIN_ENV",
    "PLUGIN_LIBRARY",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "BuildOptions",
    "EngineBuildError",
    "TensorRtRunner",
    "build_engine",
    "engine_path_for",
    "import_tensorrt",
    "load_plugin",
    "resolve_plugin",
    "tensorrt_install_hint",
]

#: Registration of the plugin (DESIGN.md section 2): found by the ONNX parser from the op type.
PLUGIN_NAME = ATTENTION_OP
PLUGIN_VERSION = str(ATTENTION_VERSION)
PLUGIN_NAMESPACE = ""
#: CMake target / library base name (plugins/tensorrt/CMakeLists.txt): libnaf_tensorrt.so.
PLUGIN_LIBRARY = "naf_tensorrt"
#: Environment variable naming the plugin library when no explicit path is given.
PLUGIN_ENV = "NAF_EXPORT_TRT_PLUGIN"
#: Environment variable with the dynamic-batch profile ``min,opt,max`` used by the CLI.

PRECISIONS = ("fp32", "fp16", "int8")
_SIDECAR_SUFFIX = ".json"


def tensorrt_install_hint() -> str:
    """What to install for TensorRT's Python bindings, per platform."""
    return (
        "install TensorRT >= 10 with its Python bindings: on x86-64 `pip install tensorrt` "
        "(or `pip install tensorrt-cu12` to match a CUDA 12 driver); on a Jetson (JetPack 6) "
        "`sudo apt-get install python3-libnvinfer python3-libnvinfer-dev` (part of JetPack's "
        "nvidia-tensorrt) and run naf-export with the system python3"
    )


def _unavailable(message: str) -> Exception:
    return TargetUnavailable(message)


def import_tensorrt() -> Any:
    """``import tensorrt``, requiring TensorRT 10 or newer; raises TargetUnavailable otherwise."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise _unavailable(f"the TensorRT Python module is not importable ({exc}); {tensorrt_install_hint()}") from exc
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise _unavailable(
            f"TensorRT {trt.__version__} is installed, the plugin (IPluginV3) needs TensorRT >= 10; "
            f"{tensorrt_install_hint()}"
        )
    return trt


# ---- logging -----------------------------------------------------------------------------------

_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()


def _logger(trt: Any) -> Any:
    """One process-wide logger (TensorRT keeps the first logger it is given) that forwards
    warnings to Python logging and remembers errors, so failures can quote TensorRT's reason."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is not None:
            return _LOGGER
        import logging

        log = logging.getLogger("naf_export.tensorrt")
        errors = {trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR}
        warning = trt.ILogger.Severity.WARNING
        info = trt.ILogger.Severity.INFO
        verbose_wanted = log.isEnabledFor(logging.DEBUG)

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[str] = []  # the latest errors
                self.error_count = 0  # all errors so far: callers mark a position in this count

            def log(self, severity: Any, msg: str) -> None:
                if severity in errors:
                    self.error_count += 1
                    self.messages.append(msg)
                    del self.messages[:-50]
                    log.error("TensorRT: %s", msg)
                elif severity == warning:
                    log.warning("TensorRT: %s", msg)
                elif severity == info:
                    log.info("TensorRT: %s", msg)
                elif verbose_wanted:  # VERBOSE floods the builder; each call takes the GIL
                    log.debug("TensorRT: %s", msg)

        _LOGGER = _Logger()
        return _LOGGER


def _errors_since(logger: Any, mark: int) -> str:
    """TensorRT's errors logged since ``mark = logger.error_count`` (the last five of them)."""
    count = min(logger.error_count - mark, len(logger.messages))
    new = logger.messages[-count:] if count > 0 else []
    return "; ".join(new[-5:]) if new else "no error message from TensorRT"


# ---- plugin library ----------------------------------------------------------------------------

_LOADED: dict[str, Any] = {}  # resolved library path -> registry handle (None: registered otherwise)
_LOAD_LOCK = threading.Lock()


def _build_hint(search: Sequence[Path] = ()) -> str:
    where = f" (looked in: {', '.join(str(p) for p in search)})" if search else ""
    return (
        f"build lib{PLUGIN_LIBRARY}.so from the plugin sources{where}: "
        "`cmake -S OUT/plugin_src -B OUT/plugin_build -DTensorRT_ROOT=<TensorRT prefix> && "
        "cmake --build OUT/plugin_build --target naf_tensorrt` (OUT/plugin_src is written by "
        "`naf-export --target tensorrt`; see plugins/tensorrt/README.md), then pass it with "
        f"--plugin or {PLUGIN_ENV}"
    )


def resolve_plugin(plugin: str | os.PathLike[str] | None = None, search_dirs: Sequence[Path] = ()) -> Path:
    """Path of the TensorRT plugin library.

    Order: ``plugin``; ``$NAF_EXPORT_TRT_PLUGIN``; ``<dir>/lib/libnaf_tensorrt.so`` for each of
    ``search_dirs`` (plugin build folders, e.g. ``OUT/plugin_build``); then
    :func:`naf_export.native.find_library` (``$NAF_EXPORT_LIB_DIR``, ``naf_export/lib``, the
    repository's ``build/``). Raises FileNotFoundError naming the library and how to build it.
    """
    from ..native import LIB_DIR_ENV, _file_name, check_plugin, find_library

    if plugin is not None:
        try:
            return check_plugin(plugin, "tensorrt").resolve()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc}; {_build_hint()}") from exc
    env = os.environ.get(PLUGIN_ENV)
    if env:
        try:
            return check_plugin(env, "tensorrt").resolve()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{PLUGIN_ENV}={env!r} is not a file; {_build_hint()}") from exc
    file_name = _file_name(PLUGIN_LIBRARY)
    candidates = [Path(d) / "lib" / file_name for d in search_dirs]
    if not os.environ.get(LIB_DIR_ENV):  # when set, that directory is authoritative
        for path in candidates:
            if path.is_file():
                return path.resolve()
    try:
        return find_library(PLUGIN_LIBRARY).resolve()
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"plugin: the TensorRT plugin library {file_name} was not found ({exc}); {_build_hint(candidates)}"
        ) from exc


def _find_creator(registry: Any) -> Any:
    """The registered creator of our plugin, or None.

    Scans ``all_creators`` instead of calling ``get_creator``, which logs an ERROR
    ("could not find plugin") through the logger when the creator is absent, i.e. on the normal
    path before the library is loaded.
    """
    creators = getattr(registry, "all_creators", None)
    if creators is None:  # bindings without the listing
        try:
            return registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
        except Exception:  # noqa: BLE001 - some bindings raise instead of returning None
            return None
    wanted = (PLUGIN_NAME, str(PLUGIN_VERSION), PLUGIN_NAMESPACE)
    for creator in creators:
        found = (getattr(creator, "name", None), str(getattr(creator, "plugin_version", None)),
                 getattr(creator, "plugin_namespace", "") or "")
        if found == wanted:
            return creator
    return None


def load_plugin(plugin: str | os.PathLike[str] | None = None, search_dirs: Sequence[Path] = ()) -> Path:
    """Register the plugin's creator with TensorRT's plugin registry; return the library path.

    Uses ``trt.get_plugin_registry().load_library`` (TensorRT calls the library's
    ``setLoggerFinder`` and registers what ``getCreators`` returns). A library is loaded once per
    process; when a creator named ``CrossScaleNeighborhoodAttention`` version ``1`` is already
    registered (an earlier load, or a library built with NAF_TENSORRT_STATIC_REGISTRATION), it is
    kept and the call only resolves the path.
    """
    trt = import_tensorrt()
    path = resolve_plugin(plugin, search_dirs)
    key = str(path)
    with _LOAD_LOCK:
        if key in _LOADED:
            return path
        logger = _logger(trt)
        trt.init_libnvinfer_plugins(logger, "")  # TensorRT's own plugins, for the parser's other fallbacks
        registry = trt.get_plugin_registry()
        if _find_creator(registry) is not None:
            if _LOADED:
                import warnings

                warnings.warn(
                    f"plugin: {PLUGIN_NAME} is already registered from {next(iter(_LOADED))}; "
                    f"{key} is not loaded (TensorRT allows one creator per name and version)",
                    RuntimeWarning, stacklevel=2,
                )
            _LOADED[key] = None
            return path
        # dlopen it first: its error message names a missing dependency (libnvinfer.so.10,
        # libcudart.so.12, ...), which TensorRT's loader does not report.
        try:
            ctypes.CDLL(key, mode=getattr(os, "RTLD_LAZY", 1) | getattr(ctypes, "RTLD_LOCAL", 0))
        except OSError as exc:
            raise FileNotFoundError(
                f"plugin: {key} cannot be loaded ({exc}); it must be built against this machine's "
                "TensorRT 10 and CUDA runtime, whose library folders must be on LD_LIBRARY_PATH"
            ) from exc
        if _find_creator(registry) is not None:  # registered by a static initializer
            _LOADED[key] = None
            return path
        mark = logger.error_count
        try:
            handle = registry.load_library(key)
        except Exception as exc:  # noqa: BLE001 - the bindings raise RuntimeError/TypeError
            raise ValueError(f"plugin: TensorRT could not load {key}: {exc}") from exc
        if handle is None or _find_creator(registry) is None:
            raise ValueError(
                f"plugin: TensorRT loaded {key} but no creator {PLUGIN_NAME!r} version {PLUGIN_VERSION} "
                f"(empty namespace) is registered: {_errors_since(logger, mark)}. Is it the naf-export "
                "TensorRT plugin, built for this TensorRT major version?"
            )
        _LOADED[key] = handle
        return path


# ---- engine building ---------------------------------------------------------------------------


class EngineBuildError(ValueError):
    """TensorRT could not parse the model or build the engine; the message says why."""


@dataclass(frozen=True)
class BuildOptions:
    """How :func:`build_engine` builds an engine.

    ``batch``: min/opt/max batch of the optimisation profile, used when the model's batch
    dimension is dynamic (``--dynamic-batch``); ignored for a fixed batch.
    ``strongly_typed``: None chooses per precision (True for int8, see the module doc).
    ``timing_cache``: file loaded when present and written after the build (None: no cache).
    ``workspace_mib``: workspace memory pool limit (None: TensorRT's default, the device memory).
    ``optimization_level``: builder optimisation level 0..5 (None: TensorRT's default, 3).
    """

    precision: str = "fp32"
    batch: tuple[int, int, int] = (1, 1, 8)
    strongly_typed: bool | None = None
    timing_cache: Path | None = None
    workspace_mib: int | None = None
    optimization_level: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        batch = tuple(self.batch)
        if len(batch) != 3 or not all(isinstance(b, int) and b >= 1 for b in batch) or not batch[0] <= batch[1] <= batch[2]:
            raise ValueError(f"batch: expected (min, opt, max) positive ints with min <= opt <= max, got {self.batch!r}")
        object.__setattr__(self, "batch", batch)
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise ValueError(f"workspace_mib: expected a positive number of MiB, got {self.workspace_mib!r}")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise ValueError(f"optimization_level: expected 0..5, got {self.optimization_level!r}")

    @property
    def is_strongly_typed(self) -> bool:
        return self.precision == "int8" if self.strongly_typed is None else self.strongly_typed


def engine_path_for(out: str | os.PathLike[str], precision: str) -> Path:
    """``OUT/naf_<precision>.engine``."""
    return Path(out) / f"naf_{precision}.engine"


def _count_attention_nodes(model: Any) -> int:
    return sum(1 for n in model.graph.node if n.op_type == ATTENTION_OP)


def _onnx_bytes_for_parser(onnx_path: Path) -> tuple[bytes | None, int, bool]:
    """(serialized model or None to parse the file as is, number of attention nodes, has Q/DQ).

    One rewrite, in memory, when needed: a model-local function named like the plugin is
    dropped, so the plugin wins on every TensorRT release. Which of the two the parser picks
    has changed: 10.0-10.6 import a same-named local function, 10.7-10.14 prefer a registered
    plugin, 10.15+ and 11 prefer the function again unless OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE
    is set (not used here: it would let any registered plugin replace built-in operators).
    """
    import onnx

    try:
        model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ValueError(f"onnx_path: {str(onnx_path)!r} is not a readable ONNX file ({exc})") from exc
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    kept = [f for f in model.functions if f.name != ATTENTION_OP]
    changed = len(kept) != len(model.functions)
    if changed:
        del model.functions[:]
        model.functions.extend(kept)
    # External data stays external: the parser resolves it from the original path.
    return (model.SerializeToString() if changed else None), _count_attention_nodes(model), has_qdq


def _parser_errors(parser: Any) -> str:
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        desc = _call(err, "desc") or str(err)
        node_name = _call(err, "node_name")
        op = _call(err, "node_operator")
        node = _call(err, "node")
        where = []
        if op:
            where.append(f"op {op}")
        if node_name:
            where.append(f"node {node_name!r}")
        if node is not None and node >= 0:
            where.append(f"#{node}")
        line = f"{' '.join(where) or 'model'}: {desc}"
        if op == ATTENTION_OP:
            line += (f" -- the {PLUGIN_NAME} plugin (version {PLUGIN_VERSION}, empty namespace) must be "
                     f"registered before parsing: load lib{PLUGIN_LIBRARY}.so first")
        lines.append(line)
    return "\n  ".join(lines)


def _call(obj: Any, name: str) -> Any:
    fn = getattr(obj, name, None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception:  # noqa: BLE001 - optional diagnostics only
        return None


def _write_atomically(path: Path, data: Any) -> None:
    """Write through a temporary file and rename, so a crash or a concurrent build never leaves
    a truncated engine or timing cache behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _has_float16_tensors(onnx_path: Path) -> bool:
    """Whether the model's own types say float16 (initializers or Cast-to-float16 nodes)."""
    import onnx

    model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    half = onnx.TensorProto.FLOAT16
    if any(t.data_type == half for t in model.graph.initializer):
        return True
    return any(n.op_type == "Cast" and any(a.name == "to" and a.i == half for a in n.attribute)
               for n in model.graph.node)


def _dims(shape: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    *,
    options: BuildOptions | None = None,
    plugin: str | os.PathLike[str] | None = None,
    plugin_search_dirs: Sequence[Path] = (),
) -> dict[str, Any]:
    """Parse ``onnx_path`` with the plugin loaded, build an engine, write it to ``engine_path``.

    Returns the build description, also written next to the engine as ``<engine>.json``
    (TensorRT version, precision, flags, profile, plugin library). Raises TargetUnavailable when
    TensorRT or a GPU is missing, FileNotFoundError for a missing plugin library, and
    EngineBuildError (a ValueError) naming the node when parsing or building fails.
    """
    trt = import_tensorrt()
    options = options or BuildOptions()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"onnx_path: no such file {str(onnx_path)!r}")
    serialized_model, attention_nodes, has_qdq = _onnx_bytes_for_parser(onnx_path)
    if options.precision == "int8" and not has_qdq:
        raise ValueError(
            f"onnx_path: int8 engines are built from a QDQ model (naf_export.quantize.quantize_int8), "
            f"{str(onnx_path)!r} has no QuantizeLinear/DequantizeLinear nodes"
        )
    if options.precision == "fp16" and options.is_strongly_typed and not _has_float16_tensors(onnx_path):
        raise ValueError(
            f"onnx_path: a strongly typed fp16 engine takes its types from the model, and {str(onnx_path)!r} "
            "has no float16 tensors (the engine would be float32): convert it with "
            "naf_export.quantize.convert_fp16 first"
        )
    plugin_path = load_plugin(plugin, plugin_search_dirs) if attention_nodes else None

    logger = _logger(trt)
    mark = logger.error_count
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001 - pybind raises TypeError when createInferBuilder fails
        raise _unavailable(
            f"TensorRT {trt.__version__} cannot create a builder ({exc}; {_errors_since(logger, mark)}): "
            "is an NVIDIA GPU with a working driver visible (nvidia-smi)?"
        ) from exc
    weak_flag = {"fp16": "FP16", "int8": "INT8"}.get(options.precision)
    if weak_flag and not options.is_strongly_typed and not hasattr(trt.BuilderFlag, weak_flag):
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no BuilderFlag.{weak_flag} (weakly typed networks are gone): build "
            "strongly typed (BuildOptions(strongly_typed=True)) from a model whose types say the precision "
            "(naf_export.quantize.convert_fp16 / quantize_int8)"
        )
    flags = 0
    strongly_typed_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if options.is_strongly_typed and strongly_typed_flag is not None:  # None: every network is
        flags |= 1 << int(strongly_typed_flag)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if serialized_model is None:
        ok = parser.parse_from_file(os.fspath(onnx_path))
    else:
        ok = parser.parse(serialized_model, os.fspath(onnx_path))
    if not ok:
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {str(onnx_path)!r}:\n  {_parser_errors(parser)}")
    plugin_layers = sum(
        1 for i in range(network.num_layers) if network.get_layer(i).type == trt.LayerType.PLUGIN_V3
    )
    if plugin_layers < attention_nodes:
        raise EngineBuildError(
            f"{str(onnx_path)!r} has {attention_nodes} {ATTENTION_OP} node(s) but the parsed network has "
            f"{plugin_layers} IPluginV3 layer(s): the parser did not map them to the plugin"
        )

    config = builder.create_builder_config()
    applied: list[str] = []
    if options.is_strongly_typed:
        applied.append("STRONGLY_TYPED")
    if options.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # IEEE float32 convolutions and matmuls
        applied.append("-TF32")
    elif weak_flag and not options.is_strongly_typed:
        config.set_flag(getattr(trt.BuilderFlag, weak_flag))
        applied.append(weak_flag)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level

    inputs = {}
    profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = _dims(tensor.shape)
        inputs[tensor.name] = list(shape)
        if -1 not in shape:
            continue
        if -1 in shape[1:]:
            raise EngineBuildError(
                f"input {tensor.name!r} has dynamic dimensions {shape} other than the batch; export with fixed "
                "--image-size/--feature-size/--output-size"
            )
        if profile is None:
            profile = builder.create_optimization_profile()
        lo, opt, hi = ((b, *shape[1:]) for b in options.batch)
        profile.set_shape(tensor.name, lo, opt, hi)
    if profile is not None:
        config.add_optimization_profile(profile)

    cache_note = None
    if options.timing_cache is not None:
        cache_path = Path(options.timing_cache)
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, False):
            # Unreadable, or recorded on another GPU / TensorRT version: start afresh.
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
            cache_note = f"timing cache {cache_path} was not usable here and was rebuilt"
        elif data:
            cache_note = f"timing cache {cache_path} reused"

    mark = logger.error_count
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {str(onnx_path)!r}: {_errors_since(logger, mark)}")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(engine_path, memoryview(serialized))
    if options.timing_cache is not None:
        _write_atomically(Path(options.timing_cache), memoryview(config.get_timing_cache().serialize()))

    info: dict[str, Any] = {
        "tensorrt": trt.__version__,
        "precision": options.precision,
        "flags": applied,
        "onnx": str(onnx_path),
        "plugin": None if plugin_path is None else str(plugin_path),
        "inputs": inputs,
        "batch_profile": list(options.batch) if profile is not None else None,
        "build_seconds": round(build_seconds, 3),
        "device": _device_description(),
    }
    if cache_note:
        info["timing_cache_note"] = cache_note
    _sidecar(engine_path).write_text(json.dumps(info, indent=2) + "\n")
    return info


def _device_description() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            return f"{props.name} (sm_{props.major}{props.minor})"
    except Exception:  # noqa: BLE001 - description only
        pass
    return None


def _sidecar(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + _SIDECAR_SUFFIX)


# ---- running -----------------------------------------------------------------------------------


def _torch_cuda() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise _unavailable(
            f"running TensorRT engines needs a CUDA build of PyTorch, this one is {torch.__version__} "
            f"(torch.cuda.is_available() is False): install a CUDA wheel (https://pytorch.org/get-started/locally/, "
            "on a Jetson NVIDIA's JetPack wheel), or run the engine with "
            "`trtexec --loadEngine=<engine> --dynamicPlugins=<libnaf_tensorrt.so>`"
        )
    return torch


def _torch_dtype(trt: Any, torch: Any, dtype: Any) -> Any:
    table = {
        "FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
        "INT64": torch.int64, "INT8": torch.int8, "UINT8": torch.uint8, "BOOL": torch.bool,
    }
    for name, value in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return value
    raise ValueError(f"engine: tensor type {dtype} has no PyTorch equivalent")


@dataclass
class _Binding:
    name: str
    shape: tuple[int, ...]  # engine shape, -1 for dynamic dimensions
    dtype: Any  # torch dtype


class TensorRtRunner:
    """A deserialized TensorRT engine of an exported NAF model, callable like the ONNX Runtime
    runner: ``runner(image, features) -> float32 (B, C, H, W)``.

    ``plugin``: the TensorRT plugin library (default: ``$NAF_EXPORT_TRT_PLUGIN``, the one recorded
    in the engine's ``.json`` sidecar, a ``plugin_build`` folder next to the engine, then the
    package's own build). Attributes: ``input_shapes`` (name -> shape, -1 for the dynamic batch),
    ``batch_range`` ((min, opt, max) or None for a fixed batch), ``build_info`` (the sidecar, or
    ``{}``).
    """

    def __init__(self, engine_path: str | os.PathLike[str], *, plugin: str | os.PathLike[str] | None = None) -> None:
        trt = import_tensorrt()
        torch = _torch_cuda()
        path = Path(engine_path)
        if not path.is_file():
            raise FileNotFoundError(f"engine_path: no such file {str(path)!r}")
        sidecar = _sidecar(path)
        self.build_info: dict[str, Any] = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        if plugin is None and not os.environ.get(PLUGIN_ENV):
            recorded = self.build_info.get("plugin")
            if recorded and Path(recorded).is_file():
                plugin = recorded
        needs_plugin = self.build_info.get("plugin", "unknown") is not None
        if needs_plugin:
            try:
                self.plugin = load_plugin(plugin, (path.parent / "plugin_build",))
            except FileNotFoundError:
                if "plugin" in self.build_info:
                    raise
                self.plugin = None  # no sidecar: the engine may be plugin-free; deserializing tells
        else:
            self.plugin = None

        logger = _logger(trt)
        mark = logger.error_count
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            built_with = self.build_info.get("tensorrt")
            reason = _errors_since(logger, mark)
            if built_with and built_with != trt.__version__:
                cause = (f"it was built with TensorRT {built_with}, this is TensorRT {trt.__version__}; engines "
                         "only load in the TensorRT version (and on the GPU model) that built them: rebuild it here")
            else:
                cause = ("it was built by another TensorRT version or for another GPU, or it needs the "
                         f"{PLUGIN_NAME} plugin and lib{PLUGIN_LIBRARY}.so is not loaded")
            raise ValueError(f"engine_path: TensorRT {trt.__version__} cannot deserialize {str(path)!r}: {cause} ({reason})")
        self._engine = engine
        self._trt = trt
        self._torch = torch

        bindings: dict[str, _Binding] = {}
        modes: dict[str, Any] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            modes[name] = engine.get_tensor_mode(name)
            bindings[name] = _Binding(name, _dims(engine.get_tensor_shape(name)),
                                      _torch_dtype(trt, torch, engine.get_tensor_dtype(name)))
        input_names = [n for n, m in modes.items() if m == trt.TensorIOMode.INPUT]
        output_names = [n for n, m in modes.items() if m == trt.TensorIOMode.OUTPUT]
        if sorted(input_names) != sorted(INPUT_NAMES) or output_names != [OUTPUT_NAME]:
            raise ValueError(
                f"engine_path: expected inputs {list(INPUT_NAMES)} and output {OUTPUT_NAME!r} (a naf-export model), "
                f"{str(path)!r} has inputs {input_names} and outputs {output_names}"
            )
        self._bindings = bindings
        self.input_shapes: dict[str, tuple[int, ...]] = {n: bindings[n].shape for n in INPUT_NAMES}
        self.config = config_from_shapes(*(bindings[n].shape for n in (*INPUT_NAMES, OUTPUT_NAME)),
                                         source=repr(str(path)))
        self.batch_range: tuple[int, int, int] | None = None
        if any(-1 in s for s in self.input_shapes.values()):
            lo, opt, hi = engine.get_tensor_profile_shape(INPUT_NAMES[0], 0)
            self.batch_range = (_dims(lo)[0], _dims(opt)[0], _dims(hi)[0])
        self._context = engine.create_execution_context()
        if self._context is None:
            raise ValueError(f"engine_path: cannot create an execution context for {str(path)!r} "
                             f"({_errors_since(logger, mark)}); is the GPU out of memory?")
        self._stream = torch.cuda.Stream()
        self._output: Any = None

    def _input(self, name: str, value: np.ndarray) -> Any:
        binding = self._bindings[name]
        array = np.asarray(value)
        expected = binding.shape
        if array.ndim != len(expected) or any(e not in (-1, a) for e, a in zip(expected, array.shape)):
            raise ValueError(f"{name}: expected shape {tuple('B' if e == -1 else e for e in expected)}, got {array.shape}")
        tensor = self._torch.from_numpy(np.ascontiguousarray(array))
        return tensor.to(device="cuda", dtype=binding.dtype, non_blocking=False).contiguous()

    def __call__(self, image: np.ndarray, features: np.ndarray) -> np.ndarray:
        trt, torch = self._trt, self._torch
        batch = int(np.shape(image)[0]) if np.ndim(image) else 0
        if np.ndim(features) and np.shape(features)[0] != batch:
            raise ValueError(f"features: batch {np.shape(features)[0]} differs from the image batch {batch}")
        if self.batch_range is not None and not self.batch_range[0] <= batch <= self.batch_range[2]:
            raise ValueError(
                f"image: batch {batch} is outside the engine's optimisation profile "
                f"{self.batch_range[0]}..{self.batch_range[2]}; rebuild with a wider BuildOptions.batch"
            )
        with torch.cuda.stream(self._stream):
            feeds = {INPUT_NAMES[0]: self._input(INPUT_NAMES[0], image),
                     INPUT_NAMES[1]: self._input(INPUT_NAMES[1], features)}
            for name, tensor in feeds.items():
                if not self._context.set_input_shape(name, tuple(tensor.shape)):
                    raise ValueError(f"{name}: TensorRT rejected input shape {tuple(tensor.shape)}")
                if not self._context.set_tensor_address(name, tensor.data_ptr()):
                    raise ArtifactError(f"{name}: TensorRT rejected the device buffer")
            out_shape = _dims(self._context.get_tensor_shape(OUTPUT_NAME))
            binding = self._bindings[OUTPUT_NAME]
            if self._output is None or tuple(self._output.shape) != out_shape:
                self._output = torch.empty(out_shape, dtype=binding.dtype, device="cuda")
            if not self._context.set_tensor_address(OUTPUT_NAME, self._output.data_ptr()):
                raise ArtifactError(f"{OUTPUT_NAME}: TensorRT rejected the device buffer")
            logger = _logger(trt)
            mark = logger.error_count
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise ArtifactError(f"engine_path: TensorRT failed to execute the engine: {_errors_since(logger, mark)}")
            result = self._output.float().cpu()  # synchronises with the stream
        self._stream.synchronize()
        del feeds  # inputs stay alive until the stream has consumed them
        return result.numpy()

    def describe(self) -> dict[str, Any]:
        """What the engine expects, for reports and ``naf-export validate``."""
        return {"input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "batch_range": list(self.batch_range) if self.batch_range else None,
                "plugin": None if self.plugin is None else str(self.plugin), **{
                    k: self.build_info[k] for k in ("tensorrt", "precision", "flags", "device") if k in self.build_info}}

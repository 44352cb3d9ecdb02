"""OpenVINO target: libnaf_openvino (operation, ONNX frontend mapping, IR serialization) against the
PyTorch reference, ``--target openvino`` parity at fp32/fp16/int8, compiled-model caching, IR round
trips in a fresh Python process and from C++, and the errors users get for missing or mismatched
extension libraries and malformed inputs. Everything runs for real in OpenVINO on CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from op_feeds import attention_node_model, feeds, reference, rel_l2
from native_build import REPO, cxx_compiler, library

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install openvino==2026.4.1)")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto  # noqa: E402

from naf_export.checkpoint import load_naf  # noqa: E402
from naf_export.pipeline import ExportConfig, sample_inputs  # noqa: E402
from naf_export.runners.openvino import OpenVinoRunner  # noqa: E402
from naf_export.targets import ExportRequest, run_target  # noqa: E402
from naf_export.targets import openvino as ov_target  # noqa: E402

# Small NAF configurations: an integer ratio (36 = 3 x 12) and a non-divisible one (40x44 from 9x11).
CONFIGS = {
    "divisible": ExportConfig(image_size=(96, 96), feature_size=(12, 12), channels=48, output_size=(36, 36)),
    "nondivisible": ExportConfig(image_size=(64, 64), feature_size=(9, 11), channels=32, output_size=(40, 44)),
}
# What naf_export.runners.openvino compiles with; the fresh-process check must match it exactly.
F32_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture(scope="module")
def ext() -> str:
    """libnaf_openvino.so (built by `pip install .`; built into <repo>/build when missing)."""
    return str(library("naf_openvino"))


@pytest.fixture(scope="module")
def naf_model():
    return load_naf(None)


# ---------------------------------------------------------------------------------------------
# The operation alone: one-node ONNX models read by OpenVINO's ONNX frontend with the extension.


# Every dimension symbolic (the CPU plugin needs static ranks, not static sizes).
DYNAMIC = {"query": ["B", "Dq", "H", "W"], "key": ["B", "Dq", "h", "w"], "value": ["B", "C", "h", "w"],
           "row_index": ["H", "K"], "col_index": ["W", "K"]}


def make_onnx(elem: int = TensorProto.FLOAT, attrs: dict | None = None, shapes: dict | None = None) -> bytes:
    attrs = {"num_heads": 2, "scale": 0.3} if attrs is None else attrs
    return attention_node_model(elem, attrs, {**DYNAMIC, **(shapes or {})})


def read(ext: str, model: bytes):
    core = ov.Core()
    core.add_extension(ext)
    return core, core.read_model(model=model)


SYMBOLIC = {"query": ["B", 32, 41, 70], "key": ["B", 32, 16, 15], "value": ["B", 48, 16, 15]}


@pytest.mark.parametrize("case", [(1, (9, 9), (36, 27)), (2, (16, 15), (41, 70))], ids=["ratio-int", "nonint-b2"])
def test_operation_float32_matches_reference(ext: str, case) -> None:
    b, in_hw, out_hw = case
    f = feeds(0, b, 32, 48, in_hw, out_hw)
    core, model = read(ext, make_onnx())
    out = core.compile_model(model, "CPU", F32_CONFIG)(f)[0]
    assert out.dtype == np.float32 and out.shape == (b, 48, *out_hw)
    assert rel_l2(out, reference(f, 2, 0.3)) < 1e-5


def test_operation_float16_matches_reference(ext: str) -> None:
    f = feeds(1, 2, 32, 48, (16, 15), (41, 70), np.float16)
    core, model = read(ext, make_onnx(TensorProto.FLOAT16))
    assert model.output(0).get_element_type() == ov.Type.f16
    out = core.compile_model(model, "CPU", F32_CONFIG)(f)[0]
    assert out.dtype == np.float16 and out.shape == (2, 48, 41, 70)
    ref = reference(f, 2, 0.3)
    assert rel_l2(out, ref) < 2e-3  # float16 output rounding
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(out).double().flatten(), ref.double().flatten(), dim=0)
    assert cosine.item() > 0.999


def test_shape_inference_with_dynamic_batch(ext: str) -> None:
    _, model = read(ext, make_onnx(shapes=SYMBOLIC))
    shape = model.output(0).get_partial_shape()
    assert shape.rank.get_length() == 4 and shape[0].is_dynamic
    assert [shape[i].get_length() for i in (1, 2, 3)] == [48, 41, 70]
    core = ov.Core()
    core.add_extension(ext)
    compiled = core.compile_model(model, "CPU", F32_CONFIG)
    for b in (1, 3):
        f = feeds(b, b, 32, 48, (16, 15), (41, 70))
        out = compiled(f)[0]
        assert out.shape == (b, 48, 41, 70)
        assert rel_l2(out, reference(f, 2, 0.3)) < 1e-5


def test_ir_serialization_keeps_attributes(ext: str, tmp_path: Path) -> None:
    core, model = read(ext, make_onnx(attrs={"num_heads": 4, "scale": 0.125}, shapes=SYMBOLIC))
    ov.save_model(model, tmp_path / "csna.xml")
    xml = (tmp_path / "csna.xml").read_text()
    assert 'type="CrossScaleNeighborhoodAttention" version="naf_opset1"' in xml
    assert 'num_heads="4"' in xml and 'scale="0.125"' in xml
    reloaded = core.read_model(tmp_path / "csna.xml")
    op = next(o for o in reloaded.get_ops() if o.get_type_name() == "CrossScaleNeighborhoodAttention")
    assert op.get_attributes() == {"num_heads": 4, "scale": 0.125}


# Malformed nodes and inputs: an OpenVINO exception naming the problem, never a crash.


def test_index_out_of_range_is_an_error(ext: str) -> None:
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["row_index"] = f["row_index"].copy()
    f["row_index"][12, 3] = 10
    core, model = read(ext, make_onnx())
    with pytest.raises(RuntimeError, match=r"CrossScaleNeighborhoodAttention: row_index: entry \[12, 3\] = 10 is outside \[0, h=10\)"):
        core.compile_model(model, "CPU", F32_CONFIG)(f)


def test_runtime_shape_mismatch_is_an_error(ext: str) -> None:
    f = feeds(0, 1, 8, 8, (10, 9), (21, 20))
    f["col_index"] = f["col_index"][:19]
    core, model = read(ext, make_onnx())
    with pytest.raises(RuntimeError, match=r"col_index: has 19 rows, expected W=20"):
        core.compile_model(model, "CPU", F32_CONFIG)(f)
    f = feeds(0, 1, 8, 12, (10, 9), (21, 20))  # 12 value channels, 8 heads: not divisible
    core, model = read(ext, make_onnx(attrs={"num_heads": 8, "scale": 0.3}))
    with pytest.raises(RuntimeError, match=r"num_heads"):
        core.compile_model(model, "CPU", F32_CONFIG)(f)


def test_graph_errors_name_the_argument(ext: str) -> None:
    shapes = {**SYMBOLIC, "query": ["B", 32, 41]}
    with pytest.raises(Exception, match=r"query: expected rank 4"):
        read(ext, make_onnx(shapes=shapes))
    shapes = {**SYMBOLIC, "key": ["B", 16, 16, 15]}
    with pytest.raises(Exception, match=r"key: channel count 16 differs from the query's 32"):
        read(ext, make_onnx(shapes=shapes))
    with pytest.raises(Exception, match=r"attribute 'num_heads' \(int\) is required"):
        read(ext, make_onnx(attrs={"scale": 0.3}))
    with pytest.raises(Exception, match=r"num_heads' must be > 0"):
        read(ext, make_onnx(attrs={"num_heads": 0, "scale": 0.3}))


# ---------------------------------------------------------------------------------------------
# naf::AxialRoPE, the queries' rotary embedding as one operation


def _rope_model(elem: int, num_heads, shape: list, symbolic_tables: bool = False) -> bytes:
    from onnx import helper

    names = ("x", "cos_h", "sin_h", "cos_w", "sin_w")
    quarter, (h, w) = shape[1] // 4 // 4, shape[2:]
    inputs = [helper.make_tensor_value_info("x", elem, shape)] + [
        helper.make_tensor_value_info(n, elem, ["Q", n[-1]] if symbolic_tables else [quarter, h if n.endswith("h") else w])
        for n in names[1:]]
    node = helper.make_node("AxialRoPE", list(names), ["y"], domain="naf", num_heads=num_heads)
    graph = helper.make_graph([node], "rope", inputs, [helper.make_tensor_value_info("y", elem, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("naf", 1)]).SerializeToString()


def test_axial_rope_matches_the_model_and_round_trips_through_ir(ext: str, naf_model, tmp_path: Path) -> None:
    from naf_export.onnx_export import rope_tables

    rope = naf_model.image_encoder.rope  # 4 heads of 64 channels
    x = torch.randn(2, 256, 13, 21)
    tables = rope_tables(rope, (13, 21))
    feeds = {"x": x.numpy(), **dict(zip(("cos_h", "sin_h", "cos_w", "sin_w"), tables))}
    core, model = read(ext, _rope_model(TensorProto.FLOAT, 4, [2, 256, 13, 21]))
    out = core.compile_model(model, "CPU", F32_CONFIG)(feeds)[0]
    with torch.no_grad():
        assert rel_l2(np.asarray(out), rope(x)) < 1e-6
    ov.save_model(model, tmp_path / "rope.xml")
    assert 'type="AxialRoPE" version="naf_opset1"' in (tmp_path / "rope.xml").read_text()
    reread = core.compile_model(core.read_model(tmp_path / "rope.xml"), "CPU", F32_CONFIG)(feeds)[0]
    assert np.array_equal(np.asarray(reread), np.asarray(out))


def test_axial_rope_errors_name_the_argument(ext: str) -> None:
    with pytest.raises(Exception, match="attribute 'num_heads' must be an int"):
        read(ext, _rope_model(TensorProto.FLOAT, 4.0, [1, 256, 9, 9]))
    core, model = read(ext, _rope_model(TensorProto.FLOAT, 4, [1, 256, 9, 9], symbolic_tables=True))
    compiled = core.compile_model(model, "CPU", F32_CONFIG)
    bad = {"x": np.zeros((1, 256, 9, 9), np.float32), "cos_h": np.zeros((16, 9), np.float32),
           "sin_h": np.zeros((16, 9), np.float32), "cos_w": np.zeros((16, 8), np.float32),
           "sin_w": np.zeros((16, 8), np.float32)}
    with pytest.raises(Exception, match=r"AxialRoPE: cos_w: expected shape \[16, 9\], got \[16, 8\]"):
        compiled(bad)


# ---------------------------------------------------------------------------------------------
# --target openvino on the NAF model


def export(naf_model, config: ExportConfig, out: Path, precision: str, **kwargs):
    request = ExportRequest(model=naf_model, config=config, out=out, precision=precision, samples=2, runs=1, **kwargs)
    return run_target("openvino", request)


@pytest.fixture(scope="module")
def fp32_exports(naf_model, ext: str, tmp_path_factory) -> dict[str, Path]:
    dirs = {}
    for name, config in CONFIGS.items():
        out = tmp_path_factory.mktemp(f"ov_fp32_{name}")
        report = export(naf_model, config, out, "fp32")
        assert report.parity["rel_l2"] < 1e-5, report.parity
        dirs[name] = out
    return dirs


@pytest.mark.parametrize("name", CONFIGS)
def test_fp32_target_matches_pytorch(fp32_exports: dict[str, Path], name: str) -> None:
    out = fp32_exports[name]
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "openvino" and report["precision"] == "fp32"
    assert set(report) >= {"target", "precision", "config", "artifacts", "parity", "latency_ms", "notes"}
    assert report["parity"]["rel_l2"] < 1e-5, report["parity"]
    xml = Path(report["artifacts"]["openvino_xml"])
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert "8 GroupNorm subgraphs written as OpenVINO GroupNormalization" in report["notes"]
    runner = OpenVinoRunner(xml)  # what `naf-export validate model.xml` opens
    assert runner.config == CONFIGS[name]
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32


def test_validate_runs_an_ir(fp32_exports: dict[str, Path], tmp_path: Path) -> None:
    from naf_export.validate import validate_artifact

    xml = fp32_exports["nondivisible"] / "naf_fused_openvino_fp32.xml"
    report = validate_artifact(xml, out=tmp_path, limit=1, pictures=False, progress=False,
                               thresholds={"max_rel_l2": 1e-5})
    assert report["runtime"] == "openvino" and report["passed"], report["overall"]


@pytest.mark.parametrize("name", CONFIGS)
def test_fp16_target_matches_pytorch(naf_model, fp32_exports: dict[str, Path], tmp_path: Path, name: str) -> None:
    report = export(naf_model, CONFIGS[name], tmp_path, "fp16")
    assert report.parity["cosine_min"] > 0.999, report.parity
    xml = Path(report.artifacts["openvino_xml"])
    # Compressed weights: the .bin holds float16 constants, about half the float32 IR's size.
    fp32_bin = fp32_exports[name] / "naf_fused_openvino_fp32.bin"
    assert xml.with_suffix(".bin").stat().st_size < 0.6 * fp32_bin.stat().st_size
    assert 'element_type="f16"' in xml.read_text()


@pytest.mark.parametrize("name", CONFIGS)
def test_int8_target_matches_pytorch(naf_model, ext: str, tmp_path: Path, name: str) -> None:
    report = export(naf_model, CONFIGS[name], tmp_path, "int8")
    assert report.parity["cosine_mean"] > 0.99, report.parity
    text = Path(report.artifacts["openvino_xml"]).read_text()
    assert 'type="FakeQuantize"' in text  # quantized convolutions ...
    assert 'type="CrossScaleNeighborhoodAttention" version="naf_opset1"' in text  # ... float attention
    ir = ov.Core()
    ir.add_extension(ext)
    model = ir.read_model(report.artifacts["openvino_xml"])
    attention = next(o for o in model.get_ops() if o.get_type_name() == "CrossScaleNeighborhoodAttention")
    assert all(i.get_source_output().get_node().get_type_name() != "FakeQuantize" for i in attention.inputs())
    assert any("int8: NNCF" in note for note in report.notes)
    # Reopened with the default hint, an INT8 IR compiles as the export ran it: the device default
    # precision for its float parts (bf16 on AMX / AVX512-BF16 CPUs, else f32).
    runner = OpenVinoRunner(report.artifacts["openvino_xml"])
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == default


def test_int8_calibrates_on_a_data_directory(naf_model, ext: str, tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    report = export(naf_model, CONFIGS["divisible"], tmp_path / "out", "int8", data=data)
    assert report.parity["cosine_mean"] > 0.99
    assert any("on 3 images" in note for note in report.notes), report.notes


def test_second_run_loads_the_compiled_model_from_cache(naf_model, ext: str, tmp_path: Path) -> None:
    first = export(naf_model, CONFIGS["divisible"], tmp_path, "fp32")
    cache = Path(first.artifacts["openvino_cache"])
    assert any(cache.iterdir()), "no compiled blob in the cache directory"
    assert any("cached for the next run" in note for note in first.notes), first.notes
    second = export(naf_model, CONFIGS["divisible"], tmp_path, "fp32")
    assert any("loaded from cache" in note for note in second.notes), second.notes
    runner = OpenVinoRunner(first.artifacts["openvino_xml"], cache_dir=cache)
    assert runner.loaded_from_cache
    uncached = OpenVinoRunner(first.artifacts["openvino_xml"])
    image, feats = sample_inputs(CONFIGS["divisible"], 1)[0]
    assert np.array_equal(runner(image, feats), uncached(image, feats))


# ---------------------------------------------------------------------------------------------
# IR round trips: a fresh process with only OpenVINO and the extension, and the C++ example.


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import openvino as ov

    ext, xml, inputs, result = sys.argv[1:5]
    core = ov.Core()
    core.add_extension(ext)
    compiled = core.compile_model(xml, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    data = np.load(inputs)
    out = compiled({"image": data["image"], "features": data["features"]})[compiled.output(0)]
    assert "naf_export" not in sys.modules and "torch" not in sys.modules
    np.save(result, out)
    """
)


@pytest.mark.parametrize("name", CONFIGS)
def test_ir_reloads_bit_for_bit_in_a_fresh_process(fp32_exports: dict[str, Path], ext: str, tmp_path: Path,
                                                   name: str) -> None:
    xml = fp32_exports[name] / "naf_fused_openvino_fp32.xml"
    image, feats = sample_inputs(CONFIGS[name], 1)[0]
    first = OpenVinoRunner(xml, extension=ext)(image, feats)
    np.savez(tmp_path / "inputs.npz", image=image, features=feats)
    script = tmp_path / "reload.py"
    script.write_text(FRESH_PROCESS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script), ext, str(xml), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    second = np.load(tmp_path / "out.npy")
    assert second.dtype == np.float32 and second.shape == first.shape
    assert np.array_equal(second.view(np.uint32), first.view(np.uint32))


@pytest.fixture(scope="module")
def cpp_example(tmp_path_factory) -> Path:
    """plugins/openvino/examples built against the OpenVINO wheel's C++ API."""
    if shutil.which("cmake") is None or cxx_compiler() is None:
        pytest.skip("the C++ example needs cmake and a C++ compiler")
    build = tmp_path_factory.mktemp("ov_example")
    ov_dir = Path(ov.__file__).parent / "cmake"
    for cmd in (["cmake", "-S", str(REPO / "plugins/openvino/examples"), "-B", str(build), f"-DOpenVINO_DIR={ov_dir}"],
                ["cmake", "--build", str(build), "-j2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return build / "naf_openvino_run"


def test_cpp_example_runs_the_ir_bit_for_bit(fp32_exports: dict[str, Path], ext: str, cpp_example: Path,
                                            tmp_path: Path) -> None:
    xml = fp32_exports["nondivisible"] / "naf_fused_openvino_fp32.xml"
    image, feats = sample_inputs(CONFIGS["nondivisible"], 1)[0]
    expected = OpenVinoRunner(xml, extension=ext)(image, feats)
    image.tofile(tmp_path / "image.f32")
    feats.tofile(tmp_path / "features.f32")
    args = [str(tmp_path / "image.f32"), str(tmp_path / "features.f32"), str(tmp_path / "out.f32")]
    proc = subprocess.run([str(cpp_example), ext, str(xml), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "output [1,32,40,44]"
    out = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(expected.shape)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))
    # The ONNX file loads from C++ too (through the extension's ONNX frontend mapping); it has the
    # spelled-out GroupNorm the IR replaces, hence float32 rounding differences only.
    proc = subprocess.run([str(cpp_example), ext, str(fp32_exports["nondivisible"] / "naf_fused.onnx"), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(expected.shape)
    assert rel_l2(out, torch.from_numpy(expected)) < 1e-5
    # A missing extension library is reported, not a crash.
    proc = subprocess.run([str(cpp_example), str(tmp_path / "libnaf_openvino.so"), str(xml), *args],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "libnaf_openvino.so" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Errors users get


def test_missing_extension_library_names_it(fp32_exports: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    xml = fp32_exports["divisible"] / "naf_fused_openvino_fp32.xml"
    with pytest.raises(FileNotFoundError, match=r"libnaf_openvino\.so.*pip install"):
        OpenVinoRunner(xml, extension=tmp_path / "libnaf_openvino.so")
    monkeypatch.setenv("NAF_EXPORT_LIB_DIR", str(tmp_path))  # an empty library folder
    with pytest.raises(FileNotFoundError, match=r"libnaf_openvino\.so.*add_extension.*pip install"):
        OpenVinoRunner(xml)


def test_cli_missing_plugin_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from naf_export.cli import main

    rc = main(["--target", "openvino", "--image-size", "64", "64", "--feature-size", "9", "11", "--channels", "32",
               "--output-size", "40", "44", "--out", str(tmp_path), "--plugin", str(tmp_path / "libnaf_openvino.so")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "OpenVINO extension library" in err and "libnaf_openvino.so" in err


def test_extension_built_for_another_openvino_is_refused(fp32_exports: dict[str, Path], ext: str,
                                                          tmp_path: Path) -> None:
    lib = tmp_path / "libnaf_openvino.so"
    shutil.copy(ext, lib)
    (tmp_path / "naf_openvino.json").write_text(json.dumps({"library": lib.name, "openvino_version": "2024.0.0"}))
    running = ov.get_version().split("-")[0]
    with pytest.raises(ValueError, match=rf"built against OpenVINO 2024\.0\.0, but OpenVINO {running} is installed"):
        OpenVinoRunner(fp32_exports["divisible"] / "naf_fused_openvino_fp32.xml", extension=lib)


def test_build_info_matches_the_installed_openvino(ext: str) -> None:
    import ctypes

    from naf_export.native import openvino_build_info

    info = openvino_build_info(ext)
    assert info is not None, "naf_openvino.json is missing next to the library"
    assert info["openvino_version"] == ov.get_version().split("-")[0]
    lib = ctypes.CDLL(ext)
    lib.naf_openvino_built_with.restype = ctypes.c_char_p
    assert lib.naf_openvino_built_with().decode() == info["openvino_version"]


def test_wrong_model_inputs_and_arrays_are_named(fp32_exports: dict[str, Path], ext: str, tmp_path: Path) -> None:
    (tmp_path / "csna.onnx").write_bytes(make_onnx(shapes=SYMBOLIC))
    with pytest.raises(ValueError, match=r"expected inputs \['image', 'features'\]"):
        OpenVinoRunner(tmp_path / "csna.onnx", extension=ext)
    with pytest.raises(FileNotFoundError, match=r"model: no such file"):
        OpenVinoRunner(tmp_path / "missing.xml")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ValueError, match=r"expected an ONNX \(\.onnx\) or OpenVINO IR \(\.xml\) file"):
        OpenVinoRunner(tmp_path / "model.txt")
    runner = OpenVinoRunner(fp32_exports["divisible"] / "naf_fused_openvino_fp32.xml", extension=ext)
    image, feats = sample_inputs(CONFIGS["divisible"], 1)[0]
    with pytest.raises(ValueError, match=r"features: expected shape \[1,48,12,12\] \(B, C, h, w\), got \(1, 48, 12, 11\)"):
        runner(image, feats[..., :11])
    with pytest.raises(ValueError, match=r"image: expected a float array"):
        runner(image.astype(np.int32), feats)


def test_fuse_group_norm_leaves_other_graphs_alone(ext: str) -> None:
    _, model = read(ext, make_onnx(shapes=SYMBOLIC))
    assert ov_target.fuse_group_norm(model) == 0


# ---------------------------------------------------------------------------------------------
# --bf16


def test_bf16_runs_in_bfloat16_where_the_cpu_has_it(naf_model, tmp_path: Path) -> None:
    from naf_export.targets.openvino import check_bf16_support

    try:
        check_bf16_support()
    except ValueError as exc:
        pytest.skip(f"this CPU has no bfloat16 arithmetic ({exc})")
    report = export(naf_model, CONFIGS["divisible"], tmp_path, "bf16")
    xml = Path(report.artifacts["openvino_xml"])
    assert xml.name.endswith("_openvino_bf16.xml")
    runner = OpenVinoRunner(xml)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    assert report.parity["cosine_mean"] > 0.999 and report.parity["rel_l2"] < 2e-2


def test_bf16_is_refused_on_cpus_without_it(naf_model, tmp_path: Path, monkeypatch, capsys) -> None:
    from naf_export.cli import main as cli_main

    monkeypatch.setattr(ov.Core, "get_property", lambda self, device, name: ["FP32", "INT8"])
    code = cli_main(["--target", "openvino", "--bf16", "--image-size", "64", "64", "--feature-size", "9", "9",
                     "--channels", "32", "--output-size", "18", "18", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "precision: --bf16 needs a CPU with bfloat16 arithmetic" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt", "coreml", "onnx"])
def test_bf16_is_refused_by_targets_without_it(tmp_path: Path, capsys, target) -> None:
    from naf_export.cli import main as cli_main

    code = cli_main(["--target", target, "--bf16", "--image-size", "64", "64", "--feature-size", "9", "9",
                     "--channels", "32", "--output-size", "18", "18", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "precision:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

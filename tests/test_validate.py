"""`naf-export validate`: reports, pictures, CI-gate exit status, and clear failures."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from naf_export.checkpoint import load_naf
from naf_export.cli import main as cli_main
from naf_export.config import ExportConfig
from naf_export.onnx_export import export_onnx

SIZES = dict(image_size=(64, 64), feature_size=(9, 9), channels=32, output_size=(36, 36))


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_naf(None)
    return export_onnx(model, tmp_path_factory.mktemp("artifact") / "naf.onnx", **SIZES)


def _validate(*args: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli_main(["validate", *map(str, args)])


def test_clean_artifact_passes_and_writes_everything(fp32_model, tmp_path, capsys):
    out = tmp_path / "val"
    assert _validate(fp32_model, "--out", out, "--limit", "2", "--max-rel-l2", "1e-5", "--min-cosine", "0.9999",
                     "--min-miou", "0.99") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["runtime"] == "onnxruntime"
    assert [r["name"] for r in report["images"]] == ["astronaut", "chelsea"]
    assert report["overall"]["rel_l2"] < 1e-5 and report["overall"]["miou"] == 1.0
    assert report["config"]["output_size"] == [36, 36]
    for name in ("astronaut_pca.png", "astronaut_error.png", "chelsea_pca.png", "report.md"):
        assert (out / name).is_file()
    with Image.open(out / "astronaut_pca.png") as img:
        assert img.width > 4 * img.height  # five tiles side by side
    assert "| astronaut |" in (out / "report.md").read_text()
    assert "PASS" in capsys.readouterr().out


def test_perturbed_weights_report_the_drop_and_fail_the_gate(fp32_model, tmp_path):
    model = onnx.load(fp32_model)
    for init in model.graph.initializer:
        if init.name.startswith("conv_w"):
            w = numpy_helper.to_array(init)
            noise = np.random.default_rng(0).normal(0, 0.5 * w.std(), w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(w + noise, init.name))
    broken = tmp_path / "perturbed.onnx"
    onnx.save(model, broken)
    out = tmp_path / "val"
    assert _validate(broken, "--out", out, "--limit", "2", "--no-pictures", "--max-rel-l2", "1e-3") == 1
    report = json.loads((out / "report.json").read_text())
    assert not report["passed"]
    assert report["overall"]["rel_l2"] > 1e-3
    assert "rel_l2" in report["failures"][0] and "--max-rel-l2" in report["failures"][0]
    # Without a gate the same drop is reported but the exit status stays 0.
    assert _validate(broken, "--out", out, "--limit", "1", "--no-pictures") == 0


def test_data_directory_is_used(fp32_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(data / "frame.png")
    out = tmp_path / "val"
    assert _validate(fp32_model, "--data", data, "--out", out, "--no-pictures") == 0
    assert [r["name"] for r in json.loads((out / "report.json").read_text())["images"]] == ["frame"]


def test_unreadable_file(tmp_path, capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    assert _validate(garbage, "--out", tmp_path / "v") == 2
    err = capsys.readouterr().err
    assert "garbage.onnx" in err and "error" in err


def test_wrong_input_names(fp32_model, tmp_path, capsys):
    model = onnx.load(fp32_model)
    model.graph.input[0].name = "pixels"
    for node in model.graph.node:
        node.input[:] = ["pixels" if i == "image" else i for i in node.input]
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, renamed)
    assert _validate(renamed, "--out", tmp_path / "v") == 2
    err = capsys.readouterr().err
    assert "expected inputs" in err and "pixels" in err


def test_missing_and_unknown_artifacts(tmp_path, capsys):
    assert _validate(tmp_path / "absent.onnx", "--out", tmp_path / "v") == 2
    assert "no such file" in capsys.readouterr().err
    other = tmp_path / "model.pth"
    other.write_bytes(b"x")
    assert _validate(other, "--out", tmp_path / "v") == 2
    assert ".onnx" in capsys.readouterr().err


# ---- --stages: where along the model the error comes from ---------------------------------------


def _stages(report: dict) -> dict:
    return report["overall"]["stages"]


def test_stages_of_a_float32_artifact_match_pytorch(fp32_model, tmp_path):
    assert _validate(str(fp32_model), "--out", str(tmp_path), "--stages", "--no-pictures", "--limit", "1") == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(_stages(report)) == ["encoder", "queries", "keys", "output"]
    assert all(m["rel_l2"] < 1e-5 for m in _stages(report).values())
    assert set(report["images"][0]["stages"]) == set(_stages(report))
    assert "| queries | queries: the encoder output after RoPE |" in (tmp_path / "report.md").read_text()


def test_stages_show_where_an_int8_artifact_loses_accuracy(tmp_path):
    from naf_export.calibration import load_calibration_set
    from naf_export.quantize import quantize_int8

    path = export_onnx(load_naf(None), tmp_path / "m.onnx", image_size=(64, 64), feature_size=(9, 9), channels=16,
                       output_size=(18, 18), attention="fused", encoder_ops="fused")
    calibration = load_calibration_set(None, ExportConfig((64, 64), (9, 9), 16, (18, 18)), limit=2, progress=False)
    int8 = quantize_int8(path, tmp_path / "m_int8.onnx", calibration, progress=False)
    assert _validate(str(int8), "--out", str(tmp_path / "r"), "--stages", "--no-pictures", "--limit", "1") == 0
    stages = _stages(json.loads((tmp_path / "r" / "report.json").read_text()))
    assert 1e-4 < stages["encoder"]["rel_l2"] < 0.5  # quantized convolutions: a real, bounded error
    assert stages["keys"]["rel_l2"] > 1e-4 and stages["output"]["rel_l2"] > 1e-5


def test_stages_of_an_openvino_ir(tmp_path):
    from naf_export.targets import ExportRequest, run_target

    request = ExportRequest(model=load_naf(None), config=ExportConfig((64, 64), (9, 9), 16, (18, 18)),
                            out=tmp_path / "ov", samples=1, runs=1)
    report = run_target("openvino", request)
    xml = report.artifacts["openvino_xml"]
    assert _validate(xml, "--out", str(tmp_path / "r"), "--stages", "--no-pictures", "--limit", "1") == 0
    stages = _stages(json.loads((tmp_path / "r" / "report.json").read_text()))
    assert all(m["rel_l2"] < 1e-5 for m in stages.values())


def test_stages_are_refused_for_engines(tmp_path, capsys):
    (tmp_path / "x.engine").write_bytes(b"engine")
    assert _validate(str(tmp_path / "x.engine"), "--out", str(tmp_path / "r"), "--stages") == 2
    assert "stages: tensorrt artifacts do not expose their intermediate tensors" in capsys.readouterr().err

"""ONNX Runtime FP16 and INT8 artifacts: accuracy against PyTorch float32 on held-out images,
measured with `validate_artifact` (the code behind `naf-export validate`)."""

from __future__ import annotations

import json
import warnings

import onnx
import pytest

from naf_export.calibration import load_calibration_set
from naf_export.checkpoint import load_naf
from naf_export.cli import main as cli_main
from naf_export.onnx_export import export_onnx
from naf_export.pipeline import ExportConfig
from naf_export.quantize import convert_fp16, quantize_int8
from naf_export.validate import validate_artifact

CASES = {
    "divisible": ExportConfig((112, 112), (14, 14), 64, (56, 56)),
    "non_divisible": ExportConfig((96, 120), (9, 11), 64, (40, 44)),
}


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_naf(None)  # the stand-in `validate` compares against when no checkpoint is given


def _fp32(model, config: ExportConfig, path, attention="fused"):
    return export_onnx(model, path, image_size=config.image_size, feature_size=config.feature_size,
                       channels=config.channels, output_size=config.output_size, attention=attention)


def _validate(path, out):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return validate_artifact(path, out=out, pictures=False, progress=False)["overall"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_fp16_accuracy(model, tmp_path, case):
    path = convert_fp16(_fp32(model, CASES[case], tmp_path / "m.onnx"), tmp_path / "m_fp16.onnx")
    graph = onnx.load(path).graph
    assert all(i.data_type != onnx.TensorProto.FLOAT for i in graph.initializer)
    attention = next(n for n in graph.node if n.op_type == "CrossScaleNeighborhoodAttention")
    assert attention.input[0] != "image"
    overall = _validate(path, tmp_path / "val")
    assert overall["cosine_min"] > 0.999, overall
    assert overall["miou_min"] > 0.98, overall


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("attention", ["fused", "portable"])
def test_int8_accuracy(model, tmp_path, case, attention):
    config = CASES[case]
    calibration = load_calibration_set(None, config, limit=8, progress=False)
    path = quantize_int8(_fp32(model, config, tmp_path / "m.onnx", attention), tmp_path / "m_int8.onnx",
                         calibration, progress=False)
    nodes = onnx.load(path).graph.node
    quantized_convs = {n.input[0] for n in nodes if n.op_type == "Conv"}
    dequantized = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear"}
    assert quantized_convs and quantized_convs <= dequantized  # every conv reads int8 activations
    assert not any(n.op_type == "QuantizeLinear" and n.name.startswith(("group_norm/", "attention/"))
                   for n in nodes)
    overall = _validate(path, tmp_path / "val")
    assert overall["cosine_mean"] > 0.99, overall
    assert overall["miou"] > 0.9, overall


def test_cli_precisions_write_their_artifacts(tmp_path, capsys):
    sizes = ["--image-size", "64", "64", "--feature-size", "9", "9", "--channels", "32",
             "--output-size", "36", "36", "--samples", "1", "--runs", "1"]
    assert cli_main([*sizes, "--fp16", "--out", str(tmp_path / "fp16")]) == 0
    report = json.loads((tmp_path / "fp16" / "report.json").read_text())
    assert report["precision"] == "fp16" and report["parity"]["cosine_min"] > 0.999
    assert (tmp_path / "fp16" / "naf_fused_fp16.onnx").is_file()
    calib = tmp_path / "calib"
    calib.mkdir()
    from PIL import Image
    import numpy as np

    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    assert cli_main([*sizes, "--int8", "--data", str(calib), "--out", str(tmp_path / "int8")]) == 0
    report = json.loads((tmp_path / "int8" / "report.json").read_text())
    assert report["precision"] == "int8" and "onnx_int8" in report["artifacts"]
    assert "2 images" in " ".join(report["notes"])
    assert cli_main([*sizes, "--data", str(calib), "--out", str(tmp_path / "bad")]) == 2
    assert "--data" in capsys.readouterr().err

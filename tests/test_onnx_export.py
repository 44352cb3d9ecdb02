"""ONNX export: graph validity, and ONNX Runtime (portable and fused) against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from naf_export import NAF
from naf_export.cli import main as cli_main
from naf_export.onnx_export import build_onnx, export_onnx, register_naf_schemas
from naf_export.pipeline import ExportConfig, sample_inputs
from naf_export.runners.onnxruntime import OnnxRuntimeRunner

# image size, feature size, channels, output size
CASES = {
    "divisible": ((112, 112), (14, 14), 384, (28, 28)),
    "non_divisible": ((97, 131), (16, 15), 128, (41, 70)),
    "resize_and_pool": ((300, 200), (9, 12), 64, (20, 30)),  # image > 4x output, uneven pooling
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = NAF().eval()
    # Non-trivial norm affine parameters so the test exercises them.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _check_against_pytorch(model, path, case, batch):
    image_size, feature_size, channels, output_size = case
    config = ExportConfig(image_size, feature_size, channels, output_size)
    runner = OnnxRuntimeRunner(path)
    pairs = sample_inputs(config, batch)
    image = np.concatenate([p[0] for p in pairs])
    feats = np.concatenate([p[1] for p in pairs])
    with torch.inference_mode():
        ref = model(torch.from_numpy(image), torch.from_numpy(feats), output_size).numpy()
    out = runner(image, feats)
    assert out.shape == ref.shape
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert rel < 1e-5, rel


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch", [1, 2])
def test_portable_matches_pytorch(model, tmp_path, case, batch):
    image_size, feature_size, channels, output_size = CASES[case]
    path = export_onnx(model, tmp_path / "m.onnx", image_size=image_size, feature_size=feature_size,
                       channels=channels, output_size=output_size, attention="portable",
                       dynamic_batch=batch > 1)
    onnx_model = onnx.load(path)
    assert all(op.domain in ("", "ai.onnx") for op in onnx_model.opset_import)
    _check_against_pytorch(model, path, CASES[case], batch)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("encoder_ops", ["onnx", "rope", "fused"])
def test_fused_with_plugin_matches_pytorch(model, tmp_path, case, batch, encoder_ops):
    image_size, feature_size, channels, output_size = CASES[case]
    path = export_onnx(model, tmp_path / "m.onnx", image_size=image_size, feature_size=feature_size,
                       channels=channels, output_size=output_size, attention="fused",
                       dynamic_batch=batch > 1, encoder_ops=encoder_ops)
    nodes = [n.op_type for n in onnx.load(path).graph.node if n.domain == "naf"]
    fused, rope = encoder_ops == "fused", encoder_ops != "onnx"
    assert nodes.count("GroupNormSiLU") == (8 if fused else 0)  # 2 branches x 2 blocks x 2 norms
    assert nodes.count("AxialRoPE") == (1 if rope else 0) and nodes.count("CrossScaleNeighborhoodAttention") == 1
    assert len(nodes) == 1 + (8 if fused else 0) + (1 if rope else 0)
    if encoder_ops == "fused":  # the blocks' reflect padding went into the fused nodes; the stem's stays
        assert len([n for n in onnx.load(path).graph.node if n.op_type == "Pad"]) == 1
    _check_against_pytorch(model, path, CASES[case], batch)


@pytest.mark.parametrize("attention, encoder_ops", [("fused", "onnx"), ("portable", "onnx"), ("fused", "fused")])
def test_checker_shape_inference_and_names(model, attention, encoder_ops):
    onnx_model = build_onnx(model, image_size=(97, 131), feature_size=(16, 15), channels=128,
                            output_size=(41, 70), attention=attention, dynamic_batch=True, encoder_ops=encoder_ops)
    register_naf_schemas()
    onnx.checker.check_model(onnx_model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(onnx_model, check_type=True, strict_mode=True)
    assert [i.name for i in inferred.graph.input] == ["image", "features"]
    assert [o.name for o in inferred.graph.output] == ["upsampled"]
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 128, 41, 70]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(attention="flash"), "attention: expected 'fused' or 'portable'"),
        (dict(encoder_ops="layer"), r"encoder_ops: expected one of \('onnx', 'rope', 'fused'\)"),
        (dict(feature_size=(8, 8)), "features: spatial size must be at least 9x9"),
        (dict(output_size=(10, 10)), "output_size: expected at least the feature size"),
        (dict(channels=30), "features: channel count 30 is not divisible by num_heads=4"),
        (dict(image_size=(0, 10)), r"image_size: expected \(height, width\)"),
    ],
)
def test_bad_export_arguments(model, kwargs, message):
    args = dict(image_size=(64, 64), feature_size=(16, 16), channels=32, output_size=(32, 32), attention="portable")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_onnx(model, **args)


def test_cli_writes_report(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(["--target", "onnxruntime", "--attention", "portable", "--image-size", "64", "64",
                     "--feature-size", "9", "9", "--channels", "32", "--output-size", "18", "18",
                     "--out", str(out), "--runs", "2", "--samples", "2"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "onnxruntime" and report["precision"] == "fp32"
    assert set(report["parity"]) == {"max_abs", "rel_l2", "cosine_min", "cosine_mean"}
    assert report["parity"]["rel_l2"] < 1e-5
    assert report["latency_ms"]["median"] > 0 and report["latency_ms"]["p90"] >= report["latency_ms"]["median"]
    assert (out / "naf_portable.onnx").is_file()
    assert "parity vs PyTorch fp32" in capsys.readouterr().out


def test_cli_onnx_target_and_bad_checkpoint(tmp_path, capsys):
    assert cli_main(["--target", "onnx", "--attention", "fused", "--image-size", "64", "64",
                     "--feature-size", "9", "9", "--channels", "32", "--output-size", "18", "18",
                     "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["parity"] is None
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert cli_main(["--checkpoint", str(bad), "--out", str(tmp_path)]) == 2
    assert "checkpoint:" in capsys.readouterr().err


@pytest.mark.parametrize("target, ops, allowed", [("openvino", "fused", "('rope', 'onnx')"),
                                                   ("tensorrt", "fused", "('onnx',)"), ("tensorrt", "rope", "('onnx',)")])
def test_plugin_encoder_nodes_are_refused_where_no_kernel_implements_them(tmp_path, capsys, target, ops, allowed):
    code = cli_main(["--target", target, "--encoder-ops", ops, "--image-size", "64", "64", "--feature-size", "9", "9",
                     "--channels", "32", "--output-size", "18", "18", "--out", str(tmp_path)])
    assert code == 2
    assert (f"encoder_ops: '{ops}' (plugin nodes) is not implemented for --target {target}; expected one of "
            f"{allowed}") in capsys.readouterr().err


def test_runner_rejects_missing_and_foreign_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="model: no such file"):
        OnnxRuntimeRunner(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="model: ONNX Runtime cannot load"):
        OnnxRuntimeRunner(tmp_path / "junk.onnx")
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    g = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "other.onnx")
    with pytest.raises(ValueError, match=r"model: expected inputs \['image', 'features'\]"):
        OnnxRuntimeRunner(tmp_path / "other.onnx")

"""Core ML target: the ML Program built with coremltools' MIL builder, read back from the saved
package and evaluated op by op (naf_export.mil_eval: MIL evaluation, not the Core ML runtime)
against PyTorch; a planted graph error the evaluator must catch; ``--target coreml`` and
``naf-export validate model.mlpackage`` through the CLI; Core ML's own prediction on macOS only."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'naf-export[coreml]')")
from coremltools.converters.mil.mil import types  # noqa: E402

from naf_export.checkpoint import load_naf  # noqa: E402
from naf_export.cli import main as cli_main  # noqa: E402
from naf_export.coreml_export import _ProgramWriter, export_coreml  # noqa: E402
from naf_export.errors import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, ArtifactError, TargetUnavailable  # noqa: E402
from naf_export.metrics import parity  # noqa: E402
from naf_export.mil_eval import OPS, MilEvaluator, UnsupportedOp, load_program  # noqa: E402
from naf_export.outdir import OutputDir  # noqa: E402
from naf_export.pipeline import ExportConfig, sample_inputs  # noqa: E402
from naf_export.runners import open_artifact  # noqa: E402
from naf_export.runners.coreml import MIL_LABEL, CoreMLRunner, coreml_runtime_available  # noqa: E402

#: A divisible ratio (18 = 2 x 9: the attention's cell form, avg_pool) and a non-divisible one
#: (9x11 -> 20x25: the gather form; the 100x90 image is first resized to 80x80, then pooled with
#: exact matrices since 80 is not a multiple of 25).
CASES = {
    "divisible": ExportConfig(image_size=(36, 36), feature_size=(9, 9), channels=8, output_size=(18, 18)),
    "nondivisible": ExportConfig(image_size=(100, 90), feature_size=(9, 11), channels=8, output_size=(20, 25)),
}
PRECISIONS = ("fp32", "fp16", "int8")
#: MIL-evaluated rel_l2 bounds against PyTorch float32 (the issue's acceptance figures).
MAX_REL_L2 = {"fp32": 1e-5, "fp16": 2e-3, "int8": 5e-3}
SMALL = ["--image-size", "36", "36", "--feature-size", "9", "9", "--output-size", "18", "18", "--channels", "8"]


def _sizes(config: ExportConfig) -> dict:
    return dict(image_size=config.image_size, feature_size=config.feature_size, channels=config.channels,
                output_size=config.output_size)


@pytest.fixture(scope="module")
def model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_naf(None)


@pytest.fixture(scope="module")
def packages(model, tmp_path_factory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("coreml")
    return {(case, precision): export_coreml(model, root / f"{case}_{precision}.mlpackage", precision=precision,
                                             **_sizes(config)).path
            for case, config in CASES.items() for precision in PRECISIONS}


@pytest.fixture(scope="module")
def references(model) -> dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    out = {}
    for case, config in CASES.items():
        rows = []
        for image, feats in sample_inputs(config, 2):
            with torch.inference_mode():
                rows.append((image, feats, model(torch.from_numpy(image), torch.from_numpy(feats),
                                                 config.output_size).numpy()))
        out[case] = rows
    return out


def _worst_rel_l2(evaluate, rows) -> float:
    return max(parity(evaluate(image=i, features=f)["upsampled"], ref)["rel_l2"] for i, f, ref in rows)


# ---- conversion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_package_reloads_with_float32_interface_and_known_ops(packages, case, precision):
    path = packages[case, precision]
    assert (path / "Manifest.json").is_file()
    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert spec.specificationVersion == 8  # iOS 17 / macOS 14
    config = CASES[case]
    shapes = {"image": [1, 3, *config.image_size], "features": [1, config.channels, *config.feature_size],
              "upsampled": [1, config.channels, *config.output_size]}
    described = {f.name: (list(f.type.multiArrayType.shape), f.type.multiArrayType.dataType)
                 for f in (*spec.description.input, *spec.description.output)}
    float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert [f.name for f in spec.description.input] == ["image", "features"]
    assert [f.name for f in spec.description.output] == ["upsampled"]
    assert described == {name: (shape, float32) for name, shape in shapes.items()}

    program = load_program(path)
    operations = list(program.functions["main"].operations)
    op_types = {op.op_type for op in operations}
    assert "custom_layer" not in op_types and op_types <= {"const", *OPS}
    assert max(len(var.shape) for op in operations for var in op.outputs) <= 5  # Core ML's rank limit
    # The attention form the ratio calls for.
    names = " ".join(op.name for op in operations)
    assert ("attention_windows" in names) == (case == "divisible")
    assert ("attention_row_windows" in names) == (case == "nondivisible")
    # Precision: float16 ops, int8 weights on exactly the convolutions, float32 at the edges.
    compute = {types.builtin_to_string(op.outputs[0].dtype) for op in operations if op.op_type not in ("const", "cast")}
    assert compute == ({"fp32"} if precision == "fp32" else {"fp16"})
    dequantized = [op for op in operations if op.op_type == "constexpr_affine_dequantize"]
    convs = [op for op in operations if op.op_type == "conv"]
    if precision == "int8":
        assert len(dequantized) == len(convs) == 10
        assert {op.outputs[0].child_ops[0].op_type for op in dequantized} == {"conv"}
        assert all(op.quantized_data.val.dtype == np.int8 for op in dequantized)
    else:
        assert not dequantized


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_mil_evaluated_parity_against_pytorch(packages, references, case, precision):
    evaluate = MilEvaluator(load_program(packages[case, precision]))
    rel_l2 = _worst_rel_l2(evaluate, references[case])
    assert rel_l2 < MAX_REL_L2[precision], f"{case} {precision}: rel_l2 {rel_l2:.3g}"
    if precision != "fp32":  # a float16 program really computes in float16
        assert rel_l2 > 1e-5


def test_int8_package_is_smaller_than_fp16_than_fp32(packages):
    from naf_export.coreml_export import package_size

    fp32, fp16, int8 = (package_size(packages["divisible", p]) for p in ("fp32", "fp16", "int8"))
    assert fp32 > 1.8 * fp16 and fp16 > 1.5 * int8


# ---- the evaluator can fail -----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_planted_zero_padding_is_caught(model, references, tmp_path, monkeypatch, case):
    """The same program with zero instead of reflect padding before the 3x3 convolutions: a
    graph error the parity check must see, although every op is valid."""
    conv = _ProgramWriter.conv

    def zero_padded(self, x, layer):
        k = layer.kernel_size[0]
        if k == 1:
            return conv(self, x, layer)
        x = self.mb.pad(x=x, pad=np.array([k // 2] * 4, dtype=np.int32), mode="constant", name=self.name("pad"))
        return self.mb.conv(x=x, weight=layer.weight.detach().numpy(), bias=layer.bias.detach().numpy(),
                            pad_type="valid", name=self.name("conv"))

    monkeypatch.setattr(_ProgramWriter, "conv", zero_padded)
    path = export_coreml(model, tmp_path / "planted.mlpackage", **_sizes(CASES[case])).path
    rel_l2 = _worst_rel_l2(MilEvaluator(load_program(path)), references[case])
    assert rel_l2 > 100 * MAX_REL_L2["fp32"], f"planted error unseen: rel_l2 {rel_l2:.3g}"


def test_changed_weight_in_the_saved_package_is_caught(packages, references, tmp_path):
    """One 3x3 convolution's weights scaled by 1.01 in the saved package's weight file."""
    import shutil

    path = shutil.copytree(packages["divisible", "fp32"], tmp_path / "edited.mlpackage")
    program = load_program(path)
    weight = next(op.weight.val for op in program.functions["main"].operations
                  if op.op_type == "conv" and op.weight.val.shape[-1] == 3)
    blob = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = blob.read_bytes()
    offset = data.index(weight.tobytes())
    blob.write_bytes(data[:offset] + (weight * np.float32(1.01)).tobytes() + data[offset + weight.nbytes:])
    rel_l2 = _worst_rel_l2(MilEvaluator(load_program(path)), references["divisible"])
    assert rel_l2 > 10 * MAX_REL_L2["fp32"]


def test_unknown_op_is_refused_before_running():
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS17)
    def program(x):
        return mb.erf(x=mb.add(x=x, y=1.0))

    with pytest.raises(UnsupportedOp, match="no implementation of op 'erf'"):
        MilEvaluator(program)


def test_unknown_attribute_value_is_refused():
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 2, 4))], opset_version=ct.target.iOS17)
    def program(x):
        return mb.concat(values=[x, x], axis=1, interleave=True)

    with pytest.raises(UnsupportedOp, match="interleave"):
        MilEvaluator(program)(x=np.zeros((1, 2, 4), np.float32))


# ---- runner, CLI, validate ------------------------------------------------------------------------


def test_runner_reads_the_config_and_checks_its_inputs(packages):
    runner = open_artifact(packages["nondivisible", "fp16"])
    assert isinstance(runner, CoreMLRunner)
    assert runner.config == CASES["nondivisible"]
    if not coreml_runtime_available():
        assert runner.runtime_label == MIL_LABEL
    with pytest.raises(ValueError, match=r"image: expected shape \(1, 3, 100, 90\)"):
        runner(np.zeros((1, 3, 90, 100), np.float32), np.zeros((1, 8, 9, 11), np.float32))
    with pytest.raises(ValueError, match="plugin: .* loads no plugin library"):
        open_artifact(packages["nondivisible", "fp16"], plugin="libnaf_onnxruntime.so")


def test_runner_refuses_a_folder_that_is_not_a_package(tmp_path):
    (tmp_path / "empty.mlpackage").mkdir()
    with pytest.raises(ValueError, match="not a Core ML package"):
        open_artifact(tmp_path / "empty.mlpackage")
    with pytest.raises(FileNotFoundError, match="no such package"):
        open_artifact(tmp_path / "missing.mlpackage")


def _cli(*args) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli_main([str(a) for a in args])


def test_target_coreml_through_the_cli_and_rerun_replaces_the_package(tmp_path, capsys):
    out = tmp_path / "out"
    assert _cli(*SMALL, "--target", "coreml", "--out", out, "--samples", "1") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "coreml" and report["precision"] == "fp32"
    assert report["parity"]["rel_l2"] < 1e-5 and report["latency_ms"] is None
    package = out / "naf_fp32.mlpackage"
    assert report["artifacts"]["mlpackage"] == str(package) and (package / "Manifest.json").is_file()
    assert any("MIL evaluation, not the Core ML runtime" in note for note in report["notes"])
    # A file of an earlier package must not survive in the new one.
    (package / "Data" / "stale.bin").write_bytes(b"old")
    assert _cli(*SMALL, "--target", "coreml", "--out", out, "--samples", "1", "--fp16") == 0
    assert _cli(*SMALL, "--target", "coreml", "--out", out, "--samples", "1") == 0
    assert not (package / "Data" / "stale.bin").exists()
    assert (out / "naf_fp16.mlpackage" / "Manifest.json").is_file()
    assert json.loads((out / "report.json").read_text())["precision"] == "fp32"


@pytest.mark.parametrize("args, message", [
    (["--plugin", "libnaf_onnxruntime.so"], "plugin: --target coreml loads no plugin library"),
    (["--dynamic-batch"], "dynamic_batch: --target coreml builds fixed shapes"),
    (["--encoder-ops", "fused"], r"encoder_ops: 'fused' \(plugin nodes\) is not implemented for --target coreml"),
    (["--int8", "--data", "DATA"], "data: --target coreml --int8 quantizes the convolution weights alone"),
])
def test_options_coreml_cannot_honour_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    import re

    (tmp_path / "data").mkdir()
    args = [str(tmp_path / "data") if a == "DATA" else a for a in args]
    out = tmp_path / "out"
    assert _cli(*SMALL, "--target", "coreml", "--out", out, *args) == EXIT_BAD_INPUT
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_missing_coremltools_exits_3_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # import coremltools -> ImportError
    out = tmp_path / "out"
    assert _cli(*SMALL, "--target", "coreml", "--out", out) == EXIT_UNAVAILABLE
    assert "pip install 'naf-export[coreml]'" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(TargetUnavailable, match=r"naf-export\[coreml\]"):
        CoreMLRunner(tmp_path)


def test_validate_an_mlpackage(packages, tmp_path, capsys):
    out = tmp_path / "val"
    assert _cli("validate", packages["divisible", "int8"], "--out", out, "--limit", "2", "--no-pictures",
                "--max-rel-l2", "5e-3") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["config"]["output_size"] == [18, 18]
    if not coreml_runtime_available():
        assert report["runtime"] == "coreml (MIL evaluation, not the Core ML runtime)"
        assert "MIL evaluation, not the Core ML runtime" in (out / "report.md").read_text()
    assert 1e-5 < report["overall"]["rel_l2"] < 5e-3
    capsys.readouterr()
    # A failing gate on the same package exits 1.
    assert _cli("validate", packages["divisible", "int8"], "--out", out, "--limit", "1", "--no-pictures",
                "--max-rel-l2", "1e-6") == 1


def test_broken_package_exits_2(packages, tmp_path, capsys):
    import shutil

    path = shutil.copytree(packages["divisible", "fp32"], tmp_path / "broken.mlpackage")
    (path / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"not a model")
    assert _cli("validate", path, "--out", tmp_path / "val", "--no-pictures") == EXIT_BAD_INPUT
    assert "broken.mlpackage" in capsys.readouterr().err


# ---- staging: a package is replaced whole ---------------------------------------------------------


def _commit_package(out: Path, manifest: str, extra: str | None = None) -> None:
    with OutputDir(out) as folder:
        package = folder.staging / "m.mlpackage"
        (package / "Data").mkdir(parents=True)
        (package / "Manifest.json").write_text(manifest)
        (package / "Data" / "weight.bin").write_text("w")
        if extra:
            (package / "Data" / extra).write_text(extra)
        folder.commit()


def test_identical_package_is_left_untouched_and_a_changed_one_replaced_whole(tmp_path):
    out = tmp_path / "out"
    _commit_package(out, "a", extra="only_in_a")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    _commit_package(out, "a", extra="only_in_a")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # same bytes: untouched
    _commit_package(out, "b")
    assert (out / "m.mlpackage" / "Manifest.json").read_text() == "b"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "m.mlpackage", "m.mlpackage/Data", "m.mlpackage/Data/weight.bin", "m.mlpackage/Manifest.json"]


def test_a_file_in_the_way_of_a_package_stops_the_commit(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.mlpackage").write_text("a file")
    with OutputDir(out) as folder:
        (folder.staging / "m.mlpackage").mkdir()
        (folder.staging / "m.mlpackage" / "Manifest.json").write_text("x")
        with pytest.raises(ValueError, match="in the way of"):
            folder.commit()
    assert (out / "m.mlpackage").read_text() == "a file"


# ---- macOS: Core ML itself ------------------------------------------------------------------------


@pytest.mark.skipif(not coreml_runtime_available(), reason="Core ML predictions run only on macOS")
@pytest.mark.parametrize("case", CASES)
def test_coreml_runtime_matches_pytorch_on_macos(packages, references, case):
    runner = CoreMLRunner(packages[case, "fp32"], backend="coreml", compute_units="CPU_ONLY")
    assert runner.runtime_label == "coreml (Core ML runtime)"
    image, feats, ref = references[case][0]
    assert parity(runner(image, feats), ref)["rel_l2"] < 1e-4


def test_coreml_backend_is_unavailable_off_macos(packages):
    if coreml_runtime_available():
        pytest.skip("Core ML runs here")
    with pytest.raises(TargetUnavailable, match="only on macOS"):
        CoreMLRunner(packages["divisible", "fp32"], backend="coreml")


def test_runtime_failure_becomes_artifact_error(packages, monkeypatch):
    runner = CoreMLRunner(packages["divisible", "fp32"], backend="mil")

    def fail(**_):
        raise FloatingPointError("simulated")

    monkeypatch.setattr(runner, "_evaluator", fail)
    config = CASES["divisible"]
    with pytest.raises(ArtifactError, match="MIL evaluation, not the Core ML runtime.* failed running"):
        runner(np.zeros((1, 3, *config.image_size), np.float32), np.zeros((1, 8, *config.feature_size), np.float32))

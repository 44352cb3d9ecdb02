"""Bad input and faults (issue "Bad input and faults"): every failure exits with its documented
code and a message naming the argument, no failed run changes its output folder, two runs never
interleave, NaN input gives NaN output everywhere, and reports are strict JSON."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from naf_export import load_naf
from naf_export.cli import main as cli_main
from naf_export.errors import EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_UNAVAILABLE
from naf_export.native import check_plugin, ort_library_path
from naf_export.onnx_export import export_onnx
from naf_export.outdir import STAGING_NAME, OutputDir

REPO = Path(__file__).resolve().parent.parent
#: The smallest sizes NAF accepts, so that each CLI run takes about a second.
SMALL = ["--image-size", "36", "36", "--feature-size", "9", "9", "--output-size", "18", "18", "--channels", "8"]
SMALL_CONFIG = dict(image_size=(36, 36), feature_size=(9, 9), channels=8, output_size=(18, 18))


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` with its kind, bytes digest and modification time."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        entries[path.relative_to(folder).as_posix()] = (path.is_dir(), digest, stat.st_mtime_ns, stat.st_size)
    return entries


def export(out: Path, *args: str) -> int:
    return cli_main([*SMALL, "--out", str(out), "--runs", "1", "--samples", "1", *args])


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """An output folder holding a successful default export."""
    out = tmp_path_factory.mktemp("good") / "out"
    assert export(out) == 0
    return out


@pytest.fixture()
def previous(good_run, tmp_path) -> Path:
    """A private copy of the good run's folder, to fail runs into."""
    out = tmp_path / "out"
    shutil.copytree(good_run, out)
    return out


# ---- 1. NaN propagates ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_frame():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 36, 36)).astype(np.float32)
    image[0, 1, 5, 7] = np.nan  # one poisoned pixel
    features = rng.standard_normal((1, 8, 9, 9)).astype(np.float32)
    return image, features


def test_nan_pixel_poisons_the_whole_pytorch_output(nan_frame):
    image, features = nan_frame
    out = load_naf()(torch.from_numpy(image), torch.from_numpy(features), (18, 18))
    assert torch.isnan(out).all()


@pytest.mark.parametrize("attention, encoder_ops", [("fused", "fused"), ("fused", "rope"), ("fused", "onnx"),
                                                    ("portable", "onnx")])
def test_nan_pixel_poisons_every_runtime(nan_frame, tmp_path, attention, encoder_ops):
    from naf_export.runners.onnxruntime import OnnxRuntimeRunner
    from naf_export.runners.openvino import OpenVinoRunner

    path = export_onnx(load_naf(), tmp_path / "naf.onnx", attention=attention, encoder_ops=encoder_ops, **SMALL_CONFIG)
    assert np.isnan(OnnxRuntimeRunner(path)(*nan_frame)).all()
    if encoder_ops != "fused":  # naf::GroupNormSiLU is ONNX Runtime's only
        assert np.isnan(OpenVinoRunner(path)(*nan_frame)).all()


# ---- 2./3. failed runs leave --out untouched; runs do not interleave ---------------------------


@pytest.mark.parametrize("args, message", [
    (["--samples", "0"], "samples: expected an int 1..6"),
    (["--channels", "0"], "channels: expected a positive multiple of 4"),
    (["--channels", "-4"], "channels: expected a positive multiple of 4"),
    (["--image-size", "1", "1"], "image_size: expected at least 2x2"),
    (["--feature-size", "5", "5"], "feature_size: expected at least 9x9"),
    (["--output-size", "8", "30"], "output_size: expected at least the feature size 9x9"),
    (["--output-size", "100000", "100000"], "output_size/image_size: .* need about .* GB of memory"),
    (["--runs", "0"], "runs: expected an int 1 or more"),
    (["--runs", "-5"], "runs: expected an int 1 or more"),
    (["--threads", "-1"], "threads: expected an int 0..."),
    (["--threads", "-1", "--target", "openvino"], "threads: expected an int 0..."),
    (["--threads", "1000"], "threads: expected an int 0..."),
    (["--plugin", "PLUGIN_OPENVINO"], "plugin: .* is the OpenVINO extension library .* needs the ONNX Runtime"),
    (["--plugin", "PLUGIN_OPENVINO", "--target", "onnx"], "plugin: --target onnx runs nothing"),
    (["--checkpoint", "CHECKPOINT_DIR"], "checkpoint: .* is a directory"),
])
def test_bad_arguments_exit_2_and_touch_nothing(previous, capsys, args, message):
    from naf_export.native import openvino_library_path

    args = [openvino_library_path() if a == "PLUGIN_OPENVINO" else str(previous) if a == "CHECKPOINT_DIR" else a
            for a in args]
    before = snapshot(previous)
    assert export(previous, *args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err
    assert snapshot(previous) == before


def test_failure_after_export_leaves_out_byte_identical(previous, tmp_path, capsys):
    """--fp16 with weights whose activations overflow float16: the ONNX files are written, then the
    artifact's output is NaN where PyTorch's is finite. The run fails (exit 1) and --out keeps
    the previous run's files, bytes and times."""
    state = load_naf().state_dict()
    for key in ("image_encoder.encoder.0.weight", "image_encoder.sem_encoder.0.weight"):
        state[key] = state[key] * 1e6
    torch.save(state, tmp_path / "overflow.pth")
    before = snapshot(previous)
    assert export(previous, "--fp16", "--checkpoint", str(tmp_path / "overflow.pth")) == EXIT_CHECK_FAILED
    assert "NaN/Inf values where PyTorch's float32 output is finite" in capsys.readouterr().err
    assert snapshot(previous) == before
    assert not (previous / STAGING_NAME).exists()


def test_failed_first_run_leaves_no_folder(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("not enough memory: simulated")  # a failure after the ONNX file is written

    monkeypatch.setattr("naf_export.targets.onnxruntime.finish_report", broken)
    out = tmp_path / "new" / "out"
    assert export(out) == EXIT_BAD_INPUT  # out of memory is reported as bad sizes, not a traceback
    assert not (tmp_path / "new").exists()


def test_commit_refuses_before_moving_anything(previous, capsys):
    """A folder standing where an artifact goes stops the commit before any file moves."""
    (previous / "naf_fused_fp16.onnx").mkdir()
    before = snapshot(previous)
    assert export(previous, "--fp16") == EXIT_BAD_INPUT
    assert "in the way of" in capsys.readouterr().err
    assert snapshot(previous) == before


def test_second_run_into_a_busy_folder_fails_at_once(previous, capsys):
    before = snapshot(previous)
    with OutputDir(previous):  # another run holds the folder
        assert export(previous) == EXIT_BAD_INPUT
        assert "in use by another naf-export run" in capsys.readouterr().err
    assert {k: v for k, v in snapshot(previous).items() if k != STAGING_NAME} == before


def test_killed_run_leftovers_are_cleared_by_the_next(previous):
    (previous / STAGING_NAME).mkdir()
    (previous / STAGING_NAME / "half_written.onnx").write_bytes(b"\0" * 10)
    assert export(previous) == 0
    assert not (previous / STAGING_NAME).exists()


def test_out_must_be_a_writable_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert export(tmp_path / "file") == EXIT_BAD_INPUT
    assert "out: " in capsys.readouterr().err and (tmp_path / "file").read_text() == "x"
    # Read-only folders: root may write anywhere, so the check itself is exercised.
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    assert export(tmp_path / "ro") == EXIT_BAD_INPUT
    assert "is not writable" in capsys.readouterr().err
    assert not (tmp_path / "ro").exists()


def test_successful_rerun_keeps_unchanged_files_untouched(previous):
    before = snapshot(previous)
    assert export(previous) == 0
    after = snapshot(previous)
    assert after["naf_fused.onnx"] == before["naf_fused.onnx"]  # same bytes: mtime kept too
    assert after["report.json"][1] is not None and STAGING_NAME not in after


# ---- 4. relative plugin paths -----------------------------------------------------------------


def test_relative_plugin_is_loaded_from_where_it_is_not_from_the_loader_path(tmp_path):
    """``--plugin ./libnaf_onnxruntime.so`` must load that file, never a namesake found on
    LD_LIBRARY_PATH (here a decoy whose constructor would leave a marker file)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the decoy library")
    decoy_dir, work = tmp_path / "decoy", tmp_path / "work"
    decoy_dir.mkdir()
    work.mkdir()
    marker = tmp_path / "decoy_ran"
    source = decoy_dir / "decoy.c"
    source.write_text(f'#include <stdio.h>\n__attribute__((constructor)) static void ran(void) {{ '
                      f'FILE* f = fopen("{marker}", "w"); if (f) fclose(f); }}\nint RegisterCustomOps(void) {{ return 1; }}\n')
    subprocess.run([compiler, "-shared", "-fPIC", str(source), "-o", str(decoy_dir / "libnaf_onnxruntime.so")],
                   check=True)
    shutil.copy(ort_library_path(), work / "libnaf_onnxruntime.so")
    env = {**os.environ, "LD_LIBRARY_PATH": str(decoy_dir), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "naf_export.cli", *SMALL, "--runs", "1", "--samples", "1",
                             "--out", str(tmp_path / "out"), "--plugin", "./libnaf_onnxruntime.so"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()


def test_check_plugin_makes_relative_paths_absolute(tmp_path, monkeypatch):
    shutil.copy(ort_library_path(), tmp_path / "libnaf_onnxruntime.so")
    monkeypatch.chdir(tmp_path)
    assert check_plugin("./libnaf_onnxruntime.so", "onnxruntime") == tmp_path / "libnaf_onnxruntime.so"


# ---- 5.–7. validate's exit codes, JSON reports -------------------------------------------------


def _validate(*args: str) -> int:
    return cli_main(["validate", *args, "--no-pictures", "--limit", "1"])


@pytest.fixture(scope="module")
def fused_onnx(good_run) -> Path:
    return good_run / "naf_fused.onnx"


def _with_initializer(src: Path, dst: Path, name_part: str, change) -> Path:
    model = onnx.load(src)
    for init in model.graph.initializer:
        if name_part in init.name:
            array = onnx.numpy_helper.to_array(init).copy()
            init.CopyFrom(onnx.numpy_helper.from_array(change(array), init.name))
    onnx.save(model, dst)
    return dst


def test_validate_artifact_failing_at_run_time_exits_2_and_keeps_the_old_report(fused_onnx, tmp_path, capsys):
    out = tmp_path / "report"
    assert _validate(str(fused_onnx), "--out", str(out)) == 0
    before = snapshot(out)
    broken = _with_initializer(fused_onnx, tmp_path / "broken.onnx", "row_index", lambda a: a + 100)
    assert _validate(str(broken), "--out", str(out)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "ONNX Runtime failed running" in err and "row_index" in err and "Traceback" not in err
    assert snapshot(out) == before
    assert json.loads((out / "report.json").read_text())["passed"] is True


def test_validate_bad_heads_exits_2(fused_onnx, tmp_path, capsys):
    model = onnx.load(fused_onnx)
    node = next(n for n in model.graph.node if n.op_type == "CrossScaleNeighborhoodAttention")
    next(a for a in node.attribute if a.name == "num_heads").i = 3  # 256 and 8 channels: not divisible
    onnx.save(model, tmp_path / "heads.onnx")
    assert _validate(str(tmp_path / "heads.onnx"), "--out", str(tmp_path / "r")) == EXIT_BAD_INPUT
    assert "num_heads" in capsys.readouterr().err


def test_validate_engine_without_tensorrt_exits_3(tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here; this checks the machines without it")
    (tmp_path / "naf.engine").write_bytes(b"not an engine")
    assert _validate(str(tmp_path / "naf.engine"), "--out", str(tmp_path / "r")) == EXIT_UNAVAILABLE
    assert "TensorRT" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _strict_json(path: Path):
    def refuse(token: str):
        raise ValueError(f"non-JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_validate_nonfinite_output_fails_and_writes_strict_json(fused_onnx, tmp_path, capsys):
    """An artifact whose output is NaN: validate fails the check (exit 1) even without thresholds,
    and report.json stays JSON (null, not NaN)."""
    poisoned = _with_initializer(fused_onnx, tmp_path / "nan.onnx", "gn_gamma",
                                 lambda a: np.full_like(a, np.nan))
    out = tmp_path / "r"
    assert _validate(str(poisoned), "--out", str(out)) == EXIT_CHECK_FAILED
    report = _strict_json(out / "report.json")
    assert report["passed"] is False and report["overall"]["nonfinite"] > 0
    assert report["overall"]["rel_l2"] is None and "nonfinite" in report["failures"][0]
    assert "| NaN |" in (out / "report.md").read_text()


def test_exact_artifact_psnr_is_written_as_json(fused_onnx, tmp_path):
    out = tmp_path / "r"
    assert _validate(str(fused_onnx), "--out", str(out)) == 0
    _strict_json(out / "report.json")


@pytest.mark.parametrize("args, message", [
    (["--limit", "0"], "limit: expected an int 1 or more"),
    (["--threads", "1000"], "threads: expected an int 0.."),
])
def test_validate_bad_counts_name_their_option(fused_onnx, tmp_path, capsys, args, message):
    assert cli_main(["validate", str(fused_onnx), "--out", str(tmp_path / "r"), *args]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_validate_refuses_to_write_into_its_data_folder(fused_onnx, tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(data / "a.png")
    before = snapshot(data)
    assert cli_main(["validate", str(fused_onnx), "--data", str(data), "--out", str(data)]) == EXIT_BAD_INPUT
    assert "out: " in capsys.readouterr().err
    assert snapshot(data) == before


# ---- 6. hostile data files -------------------------------------------------------------------


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels but holds almost nothing (a decompression bomb's
    header): the reader must refuse it from the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_and_petabyte_npy_are_refused(good_run, tmp_path, capsys):
    from naf_export.calibration import load_pair
    from naf_export.config import ExportConfig

    config = ExportConfig((36, 36), (9, 9), 8, (18, 18))
    _png_header_only(tmp_path / "big.png", 10_000, 10_000)  # above the limit; Pillow would only warn
    with pytest.raises(ValueError, match="declares 10000x10000 pixels, more than the 89,478,485 naf-export decodes"):
        load_pair(tmp_path / "big.png", config)
    _png_header_only(tmp_path / "bomb.png", 200_000, 200_000)  # Pillow itself refuses this one
    with pytest.raises(ValueError, match="declares more than the 89,478,485 naf-export decodes"):
        load_pair(tmp_path / "bomb.png", config)

    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "huge.png")
    with open(tmp_path / "huge.npy", "wb") as f:  # a header declaring 4 PB of float32, no data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6, 10**3)})
    with pytest.raises(ValueError, match=r"declares a float32 array of shape \(1000000, 1000000, 1000\)"):
        load_pair(tmp_path / "huge.png", config)

    # Through the CLI: exit 2, no traceback, --out untouched.
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(tmp_path / "bomb.png", data)
    before = snapshot(good_run)
    assert export(good_run, "--int8", "--data", str(data)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "image: " in err and "Traceback" not in err
    assert snapshot(good_run) == before


# ---- 8. the smaller ones ----------------------------------------------------------------------


def test_other_naf_opset_versions_are_refused(tmp_path):
    from naf_export.runners.onnxruntime import OnnxRuntimeRunner
    from naf_export.runners.openvino import OpenVinoRunner

    path = export_onnx(load_naf(), tmp_path / "naf.onnx", attention="fused", **SMALL_CONFIG)
    model = onnx.load(path)
    next(op for op in model.opset_import if op.domain == "naf").version = 2
    onnx.save(model, tmp_path / "opset2.onnx")
    for runner in (OnnxRuntimeRunner, OpenVinoRunner):
        with pytest.raises(ValueError, match="operator set version 2; the naf-export plugins implement version 1"):
            runner(tmp_path / "opset2.onnx")


def test_openvino_refuses_a_float_num_heads(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from op_feeds import attention_node_model, feeds
    import openvino as ov

    from naf_export.native import openvino_library_path

    f = feeds(0, 1, 8, 8, (9, 9), (18, 18))
    shapes = {n: list(v.shape) for n, v in f.items()}
    core = ov.Core()
    core.add_extension(openvino_library_path())
    model = attention_node_model(onnx.TensorProto.FLOAT, dict(num_heads=2.0, scale=0.5), shapes)
    with pytest.raises(Exception, match="attribute 'num_heads' must be an int"):
        core.read_model(model, b"")
    good = attention_node_model(onnx.TensorProto.FLOAT, dict(num_heads=2, scale=0.5), shapes)
    assert core.read_model(good, b"") is not None


def test_empty_batch_gives_empty_output():
    model = load_naf()
    out = model(torch.zeros(0, 3, 36, 36), torch.zeros(0, 8, 9, 9), (18, 18))
    assert tuple(out.shape) == (0, 8, 18, 18)


def test_exit_code_table():
    from naf_export.errors import ArtifactError, CheckFailed, TargetUnavailable, exit_code

    assert exit_code(CheckFailed("x")) == 1
    assert exit_code(ValueError("x")) == exit_code(ArtifactError("x")) == exit_code(FileNotFoundError("x")) == 2
    assert exit_code(MemoryError()) == exit_code(RuntimeError("DefaultCPUAllocator: not enough memory")) == 2
    assert exit_code(TargetUnavailable("x")) == 3
    assert exit_code(KeyError("bug")) == 4


def test_internal_errors_print_a_traceback_and_exit_4(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("naf_export.targets.onnxruntime.finish_report",
                        lambda *a, **k: {}["a bug"])  # KeyError: a bug, not bad input
    assert export(tmp_path / "out") == 4
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error" in err and "please report" in err
    assert not (tmp_path / "out").exists()

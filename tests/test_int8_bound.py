"""Accuracy-targeted INT8 (--int8 --max-rel-l2 / --min-cosine): the artifact meets the bound on
held-out images (validate confirms it independently), the report says which convolutions stayed
in float and what that cost, and impossible or misplaced bounds are refused. Small configuration."""

from __future__ import annotations

import json

import pytest

from naf_export.cli import main as cli_main
from naf_export.int8_search import AccuracyBound, search_float_layers

SMALL = ["--image-size", "64", "64", "--feature-size", "9", "9", "--output-size", "18", "18", "--channels", "16",
         "--samples", "2", "--runs", "2"]
BOUND = "0.006"  # tighter than every convolution in INT8 gives at this size, looser than float


@pytest.mark.parametrize("target, artifact", [("onnxruntime", "naf_fused_int8.onnx"),
                                              ("openvino", "naf_fused_openvino_int8.xml")])
def test_bound_holds_on_held_out_images(tmp_path, target, artifact):
    out = tmp_path / "out"
    assert cli_main(["--target", target, "--int8", "--max-rel-l2", BOUND, *SMALL, "--out", str(out)]) == 0
    q = json.loads((out / "report.json").read_text())["quantization"]
    assert q["bound"] == f"rel_l2 <= {BOUND}"
    assert q["all_int8_error"]["rel_l2"] > float(BOUND), "the bound must need float layers for this test to mean much"
    assert q["float_layers"] and q["final_error"]["rel_l2"] <= float(BOUND)
    assert q["latency_ms"] > 0 and q["latency_all_int8_ms"] > 0
    # Independently: validate, on the bundled sample images, gates on the same bound.
    assert cli_main(["validate", str(out / artifact), "--max-rel-l2", BOUND, "--no-pictures",
                     "--out", str(tmp_path / "validate")]) == 0


def test_min_cosine_bound(tmp_path):
    out = tmp_path / "out"
    assert cli_main(["--int8", "--min-cosine", "0.99999", *SMALL, "--out", str(out)]) == 0
    q = json.loads((out / "report.json").read_text())["quantization"]
    assert q["final_error"]["cosine_min"] >= 0.99999 and q["bound"] == "cosine_min >= 0.99999"


def test_unreachable_bound_is_refused_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["--int8", "--max-rel-l2", "1e-9", *SMALL, "--out", str(out)]) == 2
    assert "not met even with every convolution in float" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--max-rel-l2", "0.01"], "an accuracy bound chooses what --int8 keeps in float; add --int8"),
    (["--int8", "--max-rel-l2", "2"], "max_rel_l2: expected a value in (0, 1)"),
    (["--target", "tensorrt", "--int8", "--max-rel-l2", "0.01"], "needs a GPU in the loop"),
    (["--target", "coreml", "--int8", "--max-rel-l2", "0.01"], "quantizes weights only"),
])
def test_misplaced_bounds_are_refused(tmp_path, capsys, args, message):
    assert cli_main([*args, *SMALL, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_search_keeps_the_most_sensitive_layers_first():
    """The greedy search on a synthetic model: each layer adds a known error; the bound needs the
    two worst in float, and the search finds exactly those, in order."""
    import numpy as np

    cost = {"a": 0.001, "b": 0.004, "c": 0.002, "d": 0.0005}
    reference = np.ones((1, 2, 3, 3))

    def build(float_layers):
        error = sum(v for k, v in cost.items() if k not in float_layers)
        return lambda image, feats: reference * (1 + error)

    result = search_float_layers(build, list(cost), AccuracyBound(max_rel_l2=0.0026), [(None, None)], [reference],
                                 progress=False)
    assert result.float_layers == ["b", "c"]
    assert result.all_int8_error["rel_l2"] == pytest.approx(0.0075)
    assert result.final_error["rel_l2"] == pytest.approx(0.0015)

"""Calibration data: the bundled set, user folders with and without feature files, bad inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from naf_export.calibration import bundled_calibration_dir, list_images, load_calibration_set, load_pair
from naf_export.pipeline import ExportConfig

REPO = Path(__file__).resolve().parents[1]
CONFIG = ExportConfig((64, 80), (9, 10), 32, (36, 40))


def _write_image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)


def test_bundled_set_is_present_and_loads():
    folder = bundled_calibration_dir()
    assert len(list_images(folder)) == 16
    pairs = load_calibration_set(None, CONFIG, limit=2, progress=False)
    assert [p[0].shape for p in pairs] == [(1, 3, 64, 80)] * 2
    assert [p[1].shape for p in pairs] == [(1, 32, 9, 10)] * 2
    assert all(np.isfinite(a).all() for pair in pairs for a in pair)


def test_recipe_is_deterministic_and_matches_the_shipped_names():
    spec = importlib.util.spec_from_file_location("make_set", REPO / "calibration" / "make_set.py")
    make_set = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_set)
    first, second = make_set.build(), make_set.build()
    assert first == second
    assert sorted(first) == [p.name for p in list_images(REPO / "calibration" / "images")]


def test_folder_order_features_files_and_derivation(tmp_path):
    for i, stem in enumerate(["b", "a", "c"]):
        _write_image(tmp_path / f"{stem}.png", i)
    given = torch.randn(32, 9, 10)
    np.save(tmp_path / "a.npy", given.numpy())
    torch.save(given[None] * 2, tmp_path / "c.pt")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.png", "c.png"]
    pairs = load_calibration_set(tmp_path, CONFIG, progress=False)
    np.testing.assert_array_equal(pairs[0][1][0], given.numpy())
    np.testing.assert_array_equal(pairs[2][1][0], 2 * given.numpy())
    # b has no feature file: derived from the picture, deterministically.
    again = load_pair(tmp_path / "b.png", CONFIG)
    np.testing.assert_array_equal(pairs[1][1], again[1])
    assert pairs[1][1].shape == (1, 32, 9, 10)


def test_limit_keeps_the_first_images(tmp_path):
    for i in range(3):
        _write_image(tmp_path / f"{i}.png", i)
    assert len(load_calibration_set(tmp_path, CONFIG, limit=2, progress=False)) == 2
    with pytest.raises(ValueError, match="limit"):
        load_calibration_set(tmp_path, CONFIG, limit=0, progress=False)


@pytest.mark.parametrize(
    "writer, message",
    [
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((16, 9, 10), np.float32)), r"shape \(16, 9, 10\)"),
        (lambda p: np.save(p.with_suffix(".npy"), np.array([{"x": 1}], dtype=object)), "numeric .npy"),
        (lambda p: torch.save({"features": torch.zeros(1)}, p.with_suffix(".pt")), "one tensor"),
        (lambda p: np.save(p.with_suffix(".npy"), np.full((32, 9, 10), np.nan, np.float32)), "NaN"),
        (lambda p: p.with_suffix(".pt").write_bytes(b"not a tensor file"), "cannot read"),
    ],
)
def test_bad_feature_files_name_the_file(tmp_path, writer, message):
    image = tmp_path / "x.png"
    _write_image(image, 0)
    writer(image)
    with pytest.raises(ValueError, match=message) as info:
        load_calibration_set(tmp_path, CONFIG, progress=False)
    assert "x." in str(info.value)


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="data"):
        load_calibration_set(tmp_path / "missing", CONFIG, progress=False)
    with pytest.raises(ValueError, match="holds no images"):
        load_calibration_set(tmp_path, CONFIG, progress=False)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_calibration_set(tmp_path, CONFIG, progress=False)

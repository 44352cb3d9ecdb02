#!/usr/bin/env python3
"""Regenerate the bundled calibration set (calibration/images/) from scikit-image's data files.

Recipe ("bundled-v1"): for each source picture below, seeded square crops covering 55-100 % of the
short side at a random position, a horizontal flip with probability 1/2, resized (antialiased)
to 448x448 and written as JPEG quality 92. Grey pictures are repeated on three channels. The
sources are deliberately disjoint from the sample images validation uses (naf_export.samples), so
INT8 accuracy is measured on pictures the calibration never saw.

    python calibration/make_set.py            # rewrite calibration/images/
    python calibration/make_set.py --check    # verify the shipped files match the recipe
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

RECIPE = "bundled-v1"
SEED = 20261124
SIZE = 448
QUALITY = 92
#: scikit-image data file -> number of crops taken from it (16 images in all).
SOURCES = {
    "motorcycle_left.png": 2,
    "motorcycle_right.png": 1,
    "hubble_deep_field.jpg": 2,
    "retina.jpg": 2,
    "color.png": 1,
    "brick.png": 1,
    "grass.png": 1,
    "gravel.png": 1,
    "camera.png": 1,
    "coins.png": 1,
    "moon.png": 1,
    "page.png": 1,
    "clock_motion.png": 1,
}
OUT_DIR = Path(__file__).resolve().parent / "images"


def _source(name: str) -> Image.Image:
    import skimage

    path = Path(skimage.__file__).parent / "data" / name
    with Image.open(path) as img:
        return img.convert("RGB")


def _crops(rng: np.random.Generator, img: Image.Image, count: int) -> list[Image.Image]:
    out = []
    width, height = img.size
    short = min(width, height)
    for _ in range(count):
        side = int(round(short * rng.uniform(0.55, 1.0)))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        crop = img.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(crop)
    return out


def build() -> dict[str, bytes]:
    """File name -> JPEG bytes, in a fixed order from one seeded generator."""
    rng = np.random.default_rng(SEED)
    files = {}
    index = 0
    for name, count in SOURCES.items():
        for crop in _crops(rng, _source(name), count):
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=QUALITY)
            files[f"{index:02d}_{Path(name).stem}.jpg"] = buffer.getvalue()
            index += 1
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped images with a fresh build")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    files = build()
    if args.check:
        shipped = {p.name: p.read_bytes() for p in sorted(args.out.glob("*.jpg"))}
        bad = sorted(set(files) ^ set(shipped)) + [n for n in files if n in shipped and files[n] != shipped[n]]
        for name in bad:
            print(f"differs: {name}")
        print(f"{RECIPE}: {len(files)} images, {'OK' if not bad else f'{len(bad)} differ'}")
        return 1 if bad else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.jpg"):
        stale.unlink()
    for name, data in files.items():
        (args.out / name).write_bytes(data)
    digest = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()[:16]
    print(f"{RECIPE}: wrote {len(files)} images to {args.out} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

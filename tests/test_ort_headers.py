"""Where the ONNX Runtime headers come from (cmake/OnnxRuntimeHeaders.cmake): a build without
Node.js takes them from the ONNX Runtime release archive, checked against its SHA-256; a bad
archive and no npm fail with a message naming every route.

The archive is made here from the headers this machine already has, served as a file:// URL
(the same code path as the https download), with npm hidden from PATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from native_build import cxx_compiler

REPO = Path(__file__).resolve().parent.parent


def _installed_headers() -> Path | None:
    """A folder holding this machine's ONNX Runtime C/C++ API headers, if any."""
    roots = [Path(os.environ.get("NAF_EXPORT_CACHE") or Path.home() / ".cache" / "naf-export")]
    cache = REPO / "build" / "CMakeCache.txt"
    if cache.is_file():
        for line in cache.read_text().splitlines():
            if line.startswith("ONNXRUNTIME_INCLUDE_DIR:"):
                roots.insert(0, Path(line.split("=", 1)[1]))
    for root in roots:
        for c_api in sorted(root.glob("**/onnxruntime_c_api.h")) if root.is_dir() else []:
            if (c_api.parent / "onnxruntime_cxx_api.h").is_file():
                return c_api.parent
    return None


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, str]:
    headers = _installed_headers()
    if headers is None:
        pytest.skip("no ONNX Runtime headers on this machine to pack into a test archive")
    folder = tmp_path_factory.mktemp("archive")
    path = folder / "onnxruntime-linux-x64-1.29.0.tgz"
    with tarfile.open(path, "w:gz") as tar:  # the release archive's layout: <name>/include/*.h
        for header in sorted(headers.glob("*.h")):
            tar.add(header, arcname=f"onnxruntime-linux-x64-1.29.0/include/{header.name}")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _path_without_npm(tmp_path: Path) -> str:
    """PATH with only the tools the build needs (no npm, no node)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cmake", "make", "ninja", "cc", "c++", "gcc", "g++", "ld", "as", "ar", "ranlib", "strip", "sh"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    assert shutil.which("npm", path=str(bin_dir)) is None
    return str(bin_dir)


def _configure(tmp_path: Path, url: str, digest: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Configure a fresh build with an empty header cache, npm hidden, and the archive at ``url``;
    the result and the environment it ran in."""
    env = {**os.environ, "PATH": _path_without_npm(tmp_path), "NAF_EXPORT_CACHE": str(tmp_path / "cache")}
    cmd = ["cmake", "-S", str(REPO), "-B", str(tmp_path / "build"), "-DCMAKE_BUILD_TYPE=Release",
           "-DNAF_WITH_CUDA=OFF", "-DNAF_BUILD_OPENVINO=OFF", "-DNAF_BUILD_TENSORRT=OFF", "-DNAF_BUILD_RUNTIMES=OFF",
           f"-DNAF_ORT_ARCHIVE_URL={url}", f"-DNAF_ORT_ARCHIVE_SHA256={digest}"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300), env


def test_build_without_npm_takes_headers_from_the_release_archive(tmp_path, archive):
    if cxx_compiler() is None or shutil.which("cmake") is None:
        pytest.skip("no C++ compiler or CMake")
    path, digest = archive
    result, env = _configure(tmp_path, path.as_uri(), digest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"fetching ONNX Runtime headers from {path.as_uri()}" in result.stdout
    cached = tmp_path / "cache" / "onnxruntime-headers-1.29.0"
    assert (cached / "onnxruntime_c_api.h").is_file() and (cached / "onnxruntime_cxx_api.h").is_file()
    build = subprocess.run(["cmake", "--build", str(tmp_path / "build"), "--target", "naf_onnxruntime", "-j2"],
                           env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    library = next((tmp_path / "build").rglob("libnaf_onnxruntime.so"))
    from naf_export.native import check_plugin

    assert check_plugin(library, "onnxruntime") == library


def test_wrong_digest_and_no_npm_names_every_route(tmp_path, archive):
    if shutil.which("cmake") is None:
        pytest.skip("no CMake")
    path, digest = archive
    result, _ = _configure(tmp_path, path.as_uri(), "0" * 64)
    assert result.returncode != 0
    message = " ".join((result.stdout + result.stderr).split())
    for route in ("-DONNXRUNTIME_INCLUDE_DIR=", "cache folder", "NAF_ORT_ARCHIVE_URL=file://",
                  "npm (Node.js) is not installed", "expected 0000000000"):
        assert route in message, message[-3000:]
    assert not (tmp_path / "cache" / "onnxruntime-headers-1.29.0" / "onnxruntime_c_api.h").exists()

"""The release weights by name: ``load_naf("release")`` / ``--checkpoint release``.

The file is the one the release's own hub entry (``torch.hub.load("valeoai/NAF", "naf")``)
downloads, into the same place (``<torch hub dir>/checkpoints/naf_release.pth``), so either
tool reuses the other's copy. A download is streamed to a temporary file next to its
destination and moved into place only after it is complete (the server's Content-Length), its
SHA-256 matches the pinned digest (when one is configured) and it loads as NAF's state dict:
a truncated, corrupted or substituted file never reaches the cache.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "RELEASE_FILE", "RELEASE_SHA256", "RELEASE_SHA256_ENV", "RELEASE_URL", "RELEASE_URL_ENV", "file_sha256",
    "release_checkpoint", "release_path",
]

#: Where the release's hub entry downloads the checkpoint from.
RELEASE_URL = "https://github.com/valeoai/NAF/releases/download/model/naf_release.pth"
RELEASE_FILE = "naf_release.pth"
#: Overrides the URL (mirrors, tests against a local server).
RELEASE_URL_ENV = "NAF_EXPORT_RELEASE_URL"
#: The SHA-256 the download must have (hex). Set it until the digest is pinned below.
RELEASE_SHA256_ENV = "NAF_EXPORT_RELEASE_SHA256"
#: The release file's digest, pinned once known. It is not yet: this code was written where the
#: release cannot be downloaded, and a digest nobody has checked would be worse than none.
RELEASE_SHA256: str | None = None

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def release_path() -> Path:
    """Where the release checkpoint lives once downloaded (torch hub's checkpoint cache)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / RELEASE_FILE


def _expected_digest() -> str | None:
    value = os.environ.get(RELEASE_SHA256_ENV, "").strip().lower() or RELEASE_SHA256
    if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
        from .checkpoint import CheckpointError

        raise CheckpointError(f"{RELEASE_SHA256_ENV}: expected 64 hex digits (a SHA-256), got {value!r}")
    return value


def _offline_hint(url: str, dest: Path) -> str:
    return (f"download {url} on a machine with internet access and put it at {dest} (or pass its path: "
            f"--checkpoint /path/to/{RELEASE_FILE})")


def _download(url: str, dest: Path, expected: str | None, progress: bool) -> None:
    from tqdm import tqdm

    from .checkpoint import CheckpointError, validate_checkpoint_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest, received = hashlib.sha256(), 0
    try:
        try:
            response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 - http(s)/file URLs by design
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CheckpointError(f"checkpoint: could not download the release weights from {url} ({reason}); "
                                  f"{_offline_hint(url, dest)}") from exc
        with response, open(partial, "wb") as f:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=RELEASE_FILE, disable=not progress) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    f.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        if total is not None and received != total:
            raise CheckpointError(f"checkpoint: the download from {url} stopped after {received} of {total} bytes; "
                                  f"nothing was kept. Try again, or {_offline_hint(url, dest)}")
        if expected is not None and digest.hexdigest() != expected:
            raise CheckpointError(f"checkpoint: the file downloaded from {url} has SHA-256 {digest.hexdigest()}, "
                                  f"expected {expected} ({RELEASE_SHA256_ENV} or the pinned digest); nothing was kept")
        validate_checkpoint_file(partial, source=f"the file downloaded from {url}")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def release_checkpoint(progress: bool = True) -> Path:
    """The release checkpoint's path, downloaded first when it is not in the cache yet. A cached
    copy is checked against the expected digest when one is configured."""
    from .checkpoint import CheckpointError

    url = os.environ.get(RELEASE_URL_ENV, RELEASE_URL)
    dest = release_path()
    expected = _expected_digest()
    if not dest.is_file():
        _download(url, dest, expected, progress)
    elif expected is not None and file_sha256(dest) != expected:
        raise CheckpointError(f"checkpoint: the cached release weights {dest} have SHA-256 {file_sha256(dest)}, "
                              f"expected {expected}; delete the file to download it again")
    return dest

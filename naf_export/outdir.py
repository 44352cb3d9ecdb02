"""Output folders that a failed run cannot damage and two runs cannot interleave in.

A run writes everything into a staging folder inside its output folder and moves the files into
place only once it has succeeded, reports last; a run that fails removes its staging folder and
leaves the output folder byte-identical to before (a folder it had to create is removed again).
While a run holds an output folder, an exclusive ``flock`` on the folder itself keeps every other
naf-export run out: the second one fails at once with a message saying so. Locking the folder,
not a lock file inside it, leaves nothing behind after a failed run, and a lock dies with its
process, so a killed run never blocks the next one (whose first act is to remove the stale
staging folder).
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
from pathlib import Path

__all__ = ["BUNDLE_SUFFIXES", "STAGING_NAME", "OutputDir"]

#: The staging folder inside an output folder; only ever present while a run holds the lock.
STAGING_NAME = ".naf-export-staging"
#: Folders that are one artifact (a Core ML package: its Manifest.json names the files that belong
#: to it). A staged one replaces the folder of its name whole, so that no file of an earlier
#: version survives inside the new one.
BUNDLE_SUFFIXES = (".mlpackage",)


def _lock(fd: int) -> bool:
    """Take an exclusive non-blocking lock on ``fd``; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks on folders; staging still protects the files
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


class OutputDir:
    """``with OutputDir(path) as out:`` write into ``out.staging``, then ``out.commit()``.

    Leaving the block without a commit (an exception, or no commit call) rolls back. ``option``
    names the command-line argument in error messages (``out``: ``--out``).
    """

    def __init__(self, path: str | os.PathLike[str], *, option: str = "out") -> None:
        self.path = Path(path)
        self.option = option
        self.staging = self.path / STAGING_NAME
        self._fd: int | None = None
        self._created: list[Path] = []
        self._committed = False

    def _fail(self, what: str) -> ValueError:
        return ValueError(f"{self.option}: {str(self.path)!r} {what}")

    def __enter__(self) -> OutputDir:
        if self.path.exists() and not self.path.is_dir():
            raise self._fail("exists and is not a directory; expected a directory to write into (it is created if missing)")
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fail(f"cannot be created ({exc.strerror or exc})") from exc
        self._created = list(reversed(missing))  # outermost first; removed innermost first on rollback
        if not os.access(self.path, os.W_OK | os.X_OK):
            self._remove_created()
            raise self._fail("is not writable; choose a folder you can write to")
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        if not _lock(self._fd):
            self._release()
            raise self._fail("is in use by another naf-export run; wait for it to finish or choose another folder")
        try:
            if self.staging.exists():  # left by a killed run: we hold the lock, so nobody else uses it
                shutil.rmtree(self.staging)
            self.staging.mkdir()
        except OSError as exc:
            self._release()
            self._remove_created()
            raise self._fail(f"cannot hold a staging folder ({exc})") from exc
        return self

    def final_path(self, staged: str | os.PathLike[str]) -> Path:
        """Where a file written at ``staged`` (inside the staging folder) ends up."""
        return self.path / Path(staged).relative_to(self.staging)

    def relocate(self, text: str) -> str:
        """``text`` with every mention of the staging folder replaced by the output folder."""
        return text.replace(str(self.staging), str(self.path))

    def commit(self, last: tuple[str, ...] = ("report.json",)) -> None:
        """Move every staged file into the output folder (``last``, e.g. the report, after the
        rest). A file whose bytes are unchanged is left as it was, modification time included
        (runtimes' model caches key on it). Files of earlier runs that this run did not write
        stay, except inside a bundle (:data:`BUNDLE_SUFFIXES`): a staged bundle replaces the old
        folder whole (first, before the files), unless every file in both is byte-identical."""
        bundles = self._bundles()
        staged = sorted(p for p in self.staging.rglob("*")
                        if not p.is_dir() and not any(b in p.parents for b in bundles))
        staged.sort(key=lambda p: p.relative_to(self.staging).as_posix() in last)
        for src in (*bundles, *staged):  # refuse before moving anything
            dst = self.final_path(src)
            blocker = self._blocker(dst, bundle=src in bundles)
            if blocker is not None:
                raise self._fail(f"holds {str(blocker)!r}, which is in the way of {str(dst)!r}; move it away")
        for index, src in enumerate(bundles):
            self._replace_bundle(src, self.final_path(src), self.staging / f".replaced-{index}")
        for src in staged:
            dst = self.final_path(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_file() and not src.is_symlink() and filecmp.cmp(src, dst, shallow=False):
                src.unlink()
            else:
                os.replace(src, dst)
        shutil.rmtree(self.staging)
        self._committed = True

    def _bundles(self) -> list[Path]:
        """The staged bundle folders, outermost only."""
        found = sorted(p for p in self.staging.rglob("*") if p.is_dir() and p.suffix.lower() in BUNDLE_SUFFIXES)
        return [p for p in found if not any(q in p.parents for q in found)]

    @staticmethod
    def _same_tree(a: Path, b: Path) -> bool:
        """Whether folders ``a`` and ``b`` hold the same files with the same bytes (no links)."""
        def files(root: Path) -> dict[str, Path]:
            return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if not p.is_dir()}

        fa, fb = files(a), files(b)
        return fa.keys() == fb.keys() and all(
            not fa[k].is_symlink() and not fb[k].is_symlink() and filecmp.cmp(fa[k], fb[k], shallow=False) for k in fa)

    @staticmethod
    def _replace_bundle(src: Path, dst: Path, aside: Path) -> None:
        """Put the staged bundle ``src`` at ``dst``: the old folder there moves to ``aside`` (inside
        the staging folder, removed with it) first. An identical old bundle stays untouched."""
        if dst.is_dir() and OutputDir._same_tree(src, dst):
            shutil.rmtree(src)
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir():
            os.replace(dst, aside)
        os.replace(src, dst)

    def _blocker(self, dst: Path, bundle: bool = False) -> Path | None:
        """What stops a file (or a ``bundle`` folder) from being moved to ``dst``: a folder there
        (a file, for a bundle), or a file where one of its parent folders should be."""
        if (dst.exists() and not dst.is_dir()) if bundle else dst.is_dir():
            return dst
        for parent in dst.parents:
            if parent == self.path:
                return None
            if parent.exists() and not parent.is_dir():
                return parent
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self._committed:
                shutil.rmtree(self.staging, ignore_errors=True)
                self._remove_created()
        finally:
            self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            try:
                folder.rmdir()  # only if still empty
            except OSError:
                break

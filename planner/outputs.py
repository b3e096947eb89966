"""Every file a command writes goes through here: written to a temporary file in the target
folder and renamed over the target when complete, so that a failure (bad data, a full disk,
Ctrl-C, an exception half way) leaves the old file or nothing, never a partial one.

    with atomic_path("plan.json") as tmp:      # any writer that takes a path
        df.to_csv(tmp, index=False)
    write_text("plan.json", text)
    write_csv(df, "records.csv", index=False)

Errors the user can fix (no such folder, permission denied, disk full) are InputErrors
naming the file; the temporary file is removed in every case.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from planner.errors import InputError

TMP_PREFIX = ".tmp-"   # temporary files are ".tmp-<random>-<name>" beside the target (same suffix)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in `path`'s folder; rename it to `path` if the block succeeds."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name inside it")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist (create it first: mkdir -p {folder})")
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=f"-{path.name}", dir=folder)  # keeps the suffix
    except OSError as e:
        raise InputError(f"{path}: cannot write ({e.strerror or e})") from None
    os.close(fd)
    try:
        yield tmp
        _chmod_like_open(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise InputError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", newline=None):
    """open() whose file appears under `path` only when the block completes."""
    with atomic_path(path) as tmp:
        kw = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with open(tmp, mode, **kw) as f:
            yield f


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_csv(frame, path: str | os.PathLike, **to_csv_kwargs) -> None:
    """A pandas DataFrame to CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)


def make_dir(path: str | os.PathLike) -> Path:
    """An output folder, created with its parents if missing (InputError if that fails)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{path}: exists and is not a folder") from None
    except OSError as e:
        raise InputError(f"{path}: cannot create folder ({e.strerror or e})") from None
    return path


def _chmod_like_open(tmp: str) -> None:
    """mkstemp makes 0600 files; give the file the mode open() would (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


__all__ = ["atomic_path", "atomic_open", "write_text", "write_bytes", "write_csv", "make_dir", "TMP_PREFIX"]

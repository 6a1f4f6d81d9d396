"""Files that are whole or absent: atomic writes, fsync, and one content hash.

Everything pyred writes to disk goes through :func:`atomic_write`: the bytes go
to a temporary name in the same folder, are flushed to the disk, and the file is
renamed into place, so a reader (or a run resumed after a kill) sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """``with atomic_path(path) as tmp: <write the file tmp>``: tmp is flushed to the disk and renamed
    to ``path`` once the block finished without error (for writers that need a path, such as memmaps)."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename == tmp:  # the temporary name is pyred's own business: the error is about path
            raise OSError(exc.errno, exc.strerror, path) from None
        raise
    finally:
        remove(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_write(path) as f: ...``: ``path`` appears only once the block finished without error."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def write_npy(path: str | os.PathLike[str], array: Any) -> None:
    import numpy as np

    with atomic_write(path, "wb") as f:
        np.save(f, array)


def fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_parts(parts: Iterable[bytes]) -> str:
    """Hex sha256 of byte strings fed one after another."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def digest(obj: Any, length: int = 16) -> str:
    """Short hex sha256 of a JSON-serialisable object in canonical form (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def remove(path: str | os.PathLike[str]) -> None:
    """Removes a file if it is there."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass

"""Outputs that are never left half-written: a temporary file in the same directory, then rename.

The one definition for the whole project (``train/`` and ``export/`` use it too).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``. ``suffix`` ends
    the temporary name (a writer that picks its format by the name's extension needs the real one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def npz_bytes(arrays: dict) -> bytes:
    """An ``.npz`` archive (what ``np.savez`` writes, no pickles) with fixed member dates, so that the same
    arrays always give the same bytes (``np.savez`` stamps each member with the current time)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """``arrays`` as an ``.npz`` (``npz_bytes``: the same arrays, the same bytes), written atomically."""
    atomic_write_bytes(path, npz_bytes(arrays))

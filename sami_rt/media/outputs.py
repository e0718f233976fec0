"""Output paths checked before any work: a command that would fail to write its result says so at once, in
one sentence, instead of after sampling or encoding (and writes nothing). Used by the ``sami-rt`` commands;
the writes themselves go through ``sami_rt.media.files`` (a temporary file, then a rename)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from sami_rt.errors import InputError
from sami_rt.media.images import IMAGE_WRITE_EXTS

PLOT_EXTS = (".png", ".pdf", ".svg")  # what matplotlib writes without further packages


def check_output(path: str | os.PathLike, option: str = "-o", example: str = "out") -> Path:
    """``path`` can be written as a file: not a directory nor another non-regular file, its nearest existing
    ancestor a directory in which files can be created (tried with a temporary file, removed at once).
    Missing parent directories are fine (the write creates them). InputError otherwise."""
    p = Path(path)
    if p.is_dir() or p.name in ("", ".", ".."):
        raise InputError(f"{option} {p} is a directory; name a file in it (e.g. {p / example})")
    if p.exists() and not p.is_file():
        raise InputError(f"{option} {p} exists and is not a regular file")
    anc = p.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"{option} {p}: {anc} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sami-rt-probe.", dir=anc)
    except OSError as e:
        raise InputError(f"{option} {p}: cannot create files in {anc} ({e.strerror or e})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return p


def _check_extension(path, option: str, example: str, exts: tuple[str, ...], what: str) -> Path:
    """Writable (check_output) and named with one of ``exts``; ``what`` says what could not be made."""
    check_output(path, option, example)
    ext = Path(path).suffix.lower()
    if ext not in exts:
        raise InputError(f"{option} {path}: cannot {what.format(_ext(ext))}; name a file ending in {', '.join(exts)}")
    return Path(path)


def check_image_output(path, option: str = "-o") -> Path:
    """An image file the CLI can write: an extension OpenCV encodes (the format follows it), and writable."""
    return _check_extension(path, option, "samples.png", IMAGE_WRITE_EXTS, "write {} images")


def check_npz_output(path, option: str = "-o") -> Path:
    """A NumPy archive: a name ending in .npz (never an image or a video that would be replaced by one)."""
    check_output(path, option, "latents.npz")
    if Path(path).suffix.lower() != ".npz":
        raise InputError(f"{option} {path}: latents are written as a NumPy .npz archive; name a file ending in "
                         ".npz")
    return Path(path)


def check_plot_output(path, option: str = "--plot") -> Path:
    return _check_extension(path, option, "plot.png", PLOT_EXTS, "draw {} plots")


def _ext(ext: str) -> str:
    return ext if ext else "extension-less"

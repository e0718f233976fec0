"""Helpers shared by several test modules (fixtures live in conftest.py). Nothing outside tests/ imports this."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def copy_shipped_bundle(tmp_path: Path, name: str = "disks-small") -> tuple[Path, dict]:
    """A writable copy of a bundle shipped in sami_rt/models (``tmp_path/b``) and its manifest as a dict:
    the valid bundle that reader tests corrupt."""
    from sami_rt.runtime import resolve_model

    dst = tmp_path / "b"
    shutil.copytree(resolve_model(name), dst)
    return dst, json.loads((dst / "manifest.json").read_text())


def write_manifest(dst: Path, m: dict) -> None:
    (dst / "manifest.json").write_text(json.dumps(m))


def flip_byte(path: Path, offset: int) -> None:
    """Corrupt one byte of a file in place (a checksum must notice)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def write_y4m(path, lumas, chroma: int = 128, tags: str = ""):
    """A raw (uncompressed) yuv420p video in YUV4MPEG2: the given luma planes, every chroma sample ``chroma``;
    what the decoder hands over is exactly what was written."""
    H, W = lumas[0].shape
    c = np.full(((H + 1) // 2, (W + 1) // 2), chroma, np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F25:1 Ip A1:1 C420jpeg{tags}\n".encode())
        for y in lumas:
            f.write(b"FRAME\n" + np.ascontiguousarray(y).tobytes() + c + c)


def cli_env() -> dict:
    """The checkout first on the path, so that a subprocess imports this sami_rt (installed or not)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def run_cli(*args, cwd):
    """``python -m sami_rt.cli.main ARGS`` in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "sami_rt.cli.main", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=cli_env())

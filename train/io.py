"""JSON and text files written atomically (the mechanism is sami_rt.media.files.atomic_path)."""

from __future__ import annotations

import json
from pathlib import Path

from sami_rt.media.files import atomic_path

__all__ = ["CHECKPOINT", "atomic_path", "checkpoint_path", "load_checkpoint", "write_json", "write_text"]

CHECKPOINT = "checkpoint.pt"


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint of this project (tensors and plain data only: weights_only=True)."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def checkpoint_path(source) -> Path:
    """A run directory's checkpoint, or ``source`` itself when it is a checkpoint file."""
    path = Path(source)
    return path / CHECKPOINT if path.is_dir() else path


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)

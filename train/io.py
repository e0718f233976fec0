"""JSON and text files written atomically (the mechanism is sami_rt.io.atomic_path)."""

from __future__ import annotations

import json
from pathlib import Path

from sami_rt.io import atomic_path

__all__ = ["atomic_path", "write_json", "write_text"]


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)

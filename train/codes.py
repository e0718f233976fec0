"""Codes made elsewhere, scored by this project's metrics: ``python train/evaluate.py --metrics FILE.npz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.metrics import disentanglement_metrics


class CodesError(ValueError):
    """A --metrics file that cannot be scored, in one sentence."""


def load_codes(path: Path) -> dict:
    """A --metrics file: an .npz (numpy.savez) with ``codes_train [N, D]``, ``factors_train [N, K]`` (integer
    classes; a non-integer column is binned into 20 equal-width classes), ``codes_test [M, D]``,
    ``factors_test [M, K]`` and optionally ``attributes [M, A]`` (0/1, for the test codes: adds TAD)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise CodesError(f"{path}: not a readable .npz file ({e})") from None
    need = ("codes_train", "factors_train", "codes_test", "factors_test")
    missing = [k for k in need if k not in arrays]
    if missing:
        raise CodesError(f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(need)} (+ attributes)")
    for k in (*need, "attributes"):
        if k in arrays:
            a = arrays[k]
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
                raise CodesError(f"{path}: {k} must be a 2-d array of finite numbers, got shape {a.shape} {a.dtype}")
    for split in ("train", "test"):
        if len(arrays[f"codes_{split}"]) < 2:
            raise CodesError(f"{path}: codes_{split} needs at least 2 rows")
        if len(arrays[f"codes_{split}"]) != len(arrays[f"factors_{split}"]):
            raise CodesError(f"{path}: codes_{split} and factors_{split} have different numbers of rows")
    if arrays["codes_train"].shape[1] != arrays["codes_test"].shape[1] or \
            arrays["factors_train"].shape[1] != arrays["factors_test"].shape[1]:
        raise CodesError(f"{path}: the train and test arrays have different widths")
    if "attributes" in arrays:
        att = arrays["attributes"]
        if len(att) != len(arrays["codes_test"]) or not np.isin(att, (0, 1)).all():
            raise CodesError(f"{path}: attributes must be 0/1 with one row per test code")
    return arrays


def metrics_on_codes(path: Path, seed: int = 0) -> dict:
    a = load_codes(path)
    return disentanglement_metrics(a["codes_train"], a["factors_train"], a["codes_test"], a["factors_test"],
                                   a.get("attributes"), seed=seed)

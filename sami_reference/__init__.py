"""``sami_reference``: the bundle's model in PyTorch, a package of its own beside ``sami_rt`` (which never
imports torch): the networks (``nets``), the exact guidance (``guidance``), reading and writing a bundle's
reference weights (here), and the PyTorch eager baseline of ``sami-rt bench`` (``baseline``). ``train/`` and
``export/`` build on it; it is installed with sami-rt and works where torch is installed."""

from __future__ import annotations

import numpy as np

from sami_rt.contract.bundle import Bundle, BundleError

REFERENCE_FILE = "reference.npz"


def save_reference(model, path) -> None:
    """Write a SAMI model's weights as an npz of float32 arrays named like its state dict (no pickle)."""
    from sami_rt.media.files import atomic_path

    arrays = {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
              for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_reference(bundle: Bundle, device: str = "cpu"):
    """(model in eval mode, abar float64 tensor) rebuilt in PyTorch from a bundle's reference weights."""
    import torch

    from sami_reference.nets import SAMI

    if bundle.reference is None:
        raise BundleError(f"bundle {bundle.root} has no reference weights (export it again with this sami-rt)")
    arch = bundle.manifest.architecture
    if arch is None:
        raise BundleError(f"bundle {bundle.root}: manifest.json records no architecture (nor a training.config "
                          "to derive it from), needed to rebuild the model")
    try:
        model = SAMI(arch)
    except (AttributeError, TypeError, ValueError) as e:
        raise BundleError(f"bundle {bundle.root}: its architecture cannot rebuild the model ({e})") from None
    with np.load(bundle.reference, allow_pickle=False) as f:
        state = {k: torch.from_numpy(np.array(f[k])) for k in f.files}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise BundleError(f"bundle {bundle.root}: {bundle.reference.name} does not match the model "
                          f"({str(e).splitlines()[0]})") from None
    abar = torch.from_numpy(np.asarray(bundle.manifest.abar, dtype=np.float64))
    return model.to(device).eval().requires_grad_(False), abar

"""The networks live in ``sami_reference.nets`` (so that ``sami-rt bench`` can rebuild a bundle's model in
PyTorch without this source checkout); re-exported here for the training code."""

import numpy as np
import torch

from sami_reference.nets import (  # noqa: F401
    SAMI,
    ConvEncoder,
    HalfUNetEncoder,
    UNet,
    build_denoiser,
    build_encoder,
    init_variance_head,
)


@torch.no_grad()
def encode(model, x: torch.Tensor, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and variances (float64 numpy [N, D]) of images x, in batches on the model's device."""
    dev = next(model.encoder.parameters()).device
    mus, vars_ = [], []
    for lo in range(0, len(x), batch):
        mu, var = model.encoder(x[lo : lo + batch].to(dev))
        mus.append(mu.cpu())
        vars_.append(var.cpu())
    return torch.cat(mus).numpy().astype(np.float64), torch.cat(vars_).numpy().astype(np.float64)

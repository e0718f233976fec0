"""The PyTorch eager baseline of ``sami-rt bench``: a bundle's model rebuilt in PyTorch and called the way a
research script calls it (denoiser forward plus ``torch.autograd.grad`` guidance), on numpy arrays."""

from __future__ import annotations

import torch

from sami_reference import load_reference
from sami_reference.guidance import guided_eps


class TorchBaseline:
    def __init__(self, bundle, threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.model, abar = load_reference(bundle)
        self.s1m = torch.sqrt(1 - abar).float()

    def guided_eps(self, x_t, t, z, mask, scale):
        t = torch.from_numpy(t)
        out = guided_eps(self.model.denoiser, self.model.encoder, torch.from_numpy(x_t), t, torch.from_numpy(z),
                         self.s1m[t], torch.from_numpy(scale), torch.from_numpy(mask))
        return out.numpy()

    def encode(self, x):
        with torch.no_grad():
            mu, var = self.model.encoder(torch.from_numpy(x))
        return mu.numpy(), var.numpy()

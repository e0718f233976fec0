"""The PyTorch eager baseline of ``python -m sami_reference.bench``: a bundle's model rebuilt in PyTorch and
called the way a research script calls it (denoiser forward plus ``torch.autograd.grad`` guidance), on numpy
arrays, with the interface ``sami_rt.cli.benchmark.run_bench`` times a baseline through."""

from __future__ import annotations

import torch

from sami_reference import load_reference
from sami_reference.guidance import guided_eps


class TorchBaseline:
    """``device``: the runtime's device; a runtime on a GPU (``cuda``, ``tensorrt``) is compared with PyTorch
    on the same card where torch has CUDA, else with PyTorch on the CPU (``where`` says which). Calls take
    and give numpy arrays, as the runtime's do, so both pay the same host-device copies."""

    key = "torch"  # the suffix of the bench's figures: guided_eps_torch, torch_seconds, ...
    version = torch.__version__
    name = "PyTorch eager"  # in the bench's tables
    label = f"PyTorch {torch.__version__} eager"  # in its one-line description

    def __init__(self, bundle, threads: int = 0, device: str = "cpu", bf16: bool = False):
        self.bf16 = bf16
        if bf16:  # the bench's figures and tables name it apart from the float32 baseline
            self.key, self.name = "torch_bf16", "PyTorch eager bf16"
            self.label = f"PyTorch {torch.__version__} eager, bfloat16 autocast"
        if threads:
            torch.set_num_threads(threads)
        on_gpu = device != "cpu" and torch.cuda.is_available()
        self.device = torch.device("cuda" if on_gpu else "cpu")
        if on_gpu:
            self.where = f"CUDA ({torch.cuda.get_device_name(0)})"
        elif device != "cpu":
            self.where = "CPU (this torch has no CUDA: not the runtime's card)"
        else:
            self.where = "CPU"
        self.model, abar = load_reference(bundle, str(self.device))
        self.s1m = torch.sqrt(1 - abar).float().to(self.device)

    def _in(self, a):
        return torch.from_numpy(a).to(self.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def guided_eps(self, x_t, t, z, mask, scale):
        t = self._in(t)
        with self._autocast():
            out = guided_eps(self.model.denoiser, self.model.encoder, self._in(x_t), t, self._in(z),
                             self.s1m[t], self._in(scale), self._in(mask))
        return out.float().cpu().numpy()  # .cpu() waits for the device

    def encode(self, x):
        with torch.no_grad(), self._autocast():
            mu, var = self.model.encoder(self._in(x))
        return mu.float().cpu().numpy(), var.float().cpu().numpy()

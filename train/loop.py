"""The training loop: Adam, EMA, gradient clipping, checkpoints, exact resume, several processes.

Several processes (``torchrun``) run data-parallel: each rank draws its own share of the batch, the
gradients are averaged with one all-reduce (gloo on CPU, nccl on GPU). The all-reduce is explicit rather
than DistributedDataParallel's hooks because the loss differentiates through torch.autograd.grad with
create_graph=True (the guidance), which DDP's reducer does not expect inside one forward.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from sami_rt.sampling.schedule import make_abar
from train.config import Config
from train.data import BatchSource, eval_set
from train.eval_protocol import Stages
from train.io import CHECKPOINT, atomic_path, checkpoint_path, load_checkpoint, write_json  # noqa: F401 (re-exported)
from train.nets import SAMI
from train.baselines import vae_beta, vae_loss
from train.contrast import ProjectionHead, contrast_loss
from train.objective import kl_weight, sami_loss
from train.sampling import sample, save_grid
from train.threads import choose as choose_threads, pinned as threads_pinned



def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but torch sees no CUDA device")
    return torch.device(name)


class Dist:
    """Rank, world size and the gradient all-reduce; a no-op for a single process."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast_params(self, module: torch.nn.Module) -> None:
        if self.world > 1:
            for p in module.state_dict().values():
                dist.broadcast(p, 0)

    def average_grads(self, params: list[torch.Tensor]) -> None:
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[i : i + n].view_as(p).clone()
            i += n

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def lr_factor(step: int, cfg: Config) -> float:
    w = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
    if cfg.lr_decay == "cosine":
        w *= 0.5 * (1 + math.cos(math.pi * min(1.0, step / cfg.steps)))
    return w


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def build_model(cfg: Config) -> tuple[SAMI, Config]:
    """The SAMI pair for a configuration; with ``cfg.denoiser`` the denoiser is the frozen one it names, and
    the configuration takes that denoiser's schedule and image shape. ``cfg.model`` vae / beta-vae: the
    baseline (train/baselines.py)."""
    from train.baselines import MODELS, VAE

    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; expected one of {', '.join(MODELS)}")
    if cfg.model != "sami":
        if cfg.denoiser:
            raise ValueError(f"--denoiser is for SAMI; a {cfg.model} has no diffusion decoder")
        return VAE(cfg), cfg
    if not cfg.denoiser:
        return SAMI(cfg.architecture()), cfg
    from train.frozen import resolve

    cfg, frozen = resolve(cfg)
    model = SAMI(cfg)
    model.denoiser = frozen
    return model, cfg


def load_run(source, ema: bool = True):
    """(model in eval mode, config, abar float64 tensor, step) from a run directory or a checkpoint file."""
    ck = load_checkpoint(checkpoint_path(source))
    cfg = Config.from_dict(ck["config"])
    model, _ = build_model(cfg)
    model.load_state_dict(ck["ema" if ema else "model"])
    return model.eval().requires_grad_(False), cfg, ck["abar"].to(torch.float64), int(ck["step"])


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = pick_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.threads_chosen = 0  # the measured count (train.threads), recorded in the checkpoint
        self.dist = Dist(self.device)
        torch.manual_seed(cfg.seed)
        model, cfg = build_model(cfg)  # a frozen denoiser brings its own schedule and image shape
        self.cfg = cfg
        self.data = BatchSource(cfg, "train")  # data that cannot be read stops the run before the optimiser's set-up
        self.model = model.to(self.device)
        self.dist.broadcast_params(self.model)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        lr_enc = cfg.enc_lr or cfg.lr
        groups = [{"params": self.model.encoder.parameters(), "lr": lr_enc, "base_lr": lr_enc}]
        self.baseline = cfg.model != "sami"
        # the augmentation-invariance term's projection head (train/contrast.py): trained, checkpointed, never exported
        self.head = ProjectionHead(cfg.latent_dim).to(self.device) if cfg.aux_contrast else None
        if self.head is not None:
            self.dist.broadcast_params(self.head)
            groups.append({"params": self.head.parameters(), "lr": lr_enc, "base_lr": lr_enc})
        if self.baseline:
            groups.insert(0, {"params": self.model.decoder.parameters(), "lr": cfg.lr, "base_lr": cfg.lr})
        elif not cfg.denoiser:  # a frozen denoiser never reaches the optimiser
            groups.insert(0, {"params": self.model.denoiser.parameters(), "lr": cfg.lr, "base_lr": cfg.lr})
        self.opt = torch.optim.Adam(groups)
        self.abar_np = make_abar(cfg.schedule, cfg.T, cfg.beta_start, cfg.beta_end)
        self.abar = torch.from_numpy(self.abar_np).to(self.device)
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank)
        self.step = 0
        self._guides = None
        if resume:
            self._restore()

    # -------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict:
        rng = self.dist.gather({"gen": self.gen.get_state(), "torch": torch.get_rng_state(),
                                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None})
        return {"format": 1, "step": self.step, "config": self.cfg.to_dict(),
                "architecture": self.cfg.architecture().to_json() if self.cfg.model == "sami" else None,
                "abar": torch.from_numpy(self.abar_np),
                "model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "head": self.head.state_dict() if self.head is not None else None,
                "rng": rng, "threads": self.threads_chosen}

    def _restore(self) -> None:
        if self.dist.main:  # temporary files of writes that a killed process never finished
            for f in self.run_dir.glob(".*.tmp"):
                f.unlink(missing_ok=True)
        ck = load_checkpoint(self.run_dir / CHECKPOINT, self.device)
        if len(ck["rng"]) != self.dist.world:
            raise RuntimeError(f"{self.run_dir / CHECKPOINT} was written by {len(ck['rng'])} process(es); "
                               f"resume it with the same number (this run has {self.dist.world})")
        self.model.load_state_dict(ck["model"])
        self.ema.load_state_dict(ck["ema"])
        if (self.head is None) != (ck.get("head") is None):
            was = ck.get("config", {}).get("aux_contrast", 0)
            raise RuntimeError(f"{self.run_dir / CHECKPOINT} was trained with --aux-contrast {was}; resume it with "
                               f"that (the optimiser's state holds the term's head or none)")
        if self.head is not None:
            self.head.load_state_dict(ck["head"])
        self.opt.load_state_dict(ck["opt"])
        r = ck["rng"][self.dist.rank]
        self.gen.set_state(r["gen"].cpu())
        torch.set_rng_state(r["torch"].cpu())
        if r.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(r["cuda"].cpu())
        self.step = int(ck["step"])
        self.threads_chosen = int(ck.get("threads", 0))  # kept on resume: the count changes rounding

    def checkpoint(self) -> None:
        st = self.state()  # collective: every rank takes part
        if self.dist.main:
            save_checkpoint(self.run_dir / CHECKPOINT, st)

    # --------------------------------------------------------------------------------------- loop
    def train_step(self) -> dict:
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(self.step, cfg)
        final = vae_beta(cfg) if self.baseline else cfg.kl_weight
        beta = kl_weight(self.step, cfg.steps, final, cfg.kl_anneal_start, cfg.kl_anneal_frac)
        loss, stats = self._loss(beta)
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(f"loss is {stats['loss']} at step {self.step} (rec {stats['rec']}, kl {stats['kl']})")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.head is not None:
            params += list(self.head.parameters())
        self.dist.average_grads(params)
        if cfg.grad_clip > 0:
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        self.opt.step()
        d = min(cfg.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.model.parameters()):
                pe.lerp_(p, 1 - d)
            for be, b in zip(self.ema.buffers(), self.model.buffers()):
                be.copy_(b)
        self.step += 1
        return stats

    def _loss(self, beta: float):
        """(loss, stats) of one minibatch drawn with the run's generator."""
        cfg = self.cfg
        x0 = self.data.sample(cfg.batch // self.dist.world, self.gen).to(self.device)
        if self.baseline:
            loss, stats = vae_loss(self.model, x0, cfg, beta, self.gen)
        else:
            loss, stats = sami_loss(self.model, x0, self.abar, cfg, beta, self.gen)
        if self.head is not None:
            nce = contrast_loss(self.model.encoder, self.head, x0, cfg.aux_temperature, self.gen, cfg.aux_contrast_input)
            loss = loss + cfg.aux_contrast * nce
            stats.update(loss=loss.item(), contrast=nce.item())
        return loss, stats

    def _probe_step(self) -> None:
        """A training step's forward and backward passes, leaving the weights, the optimiser and every random
        state as they were (what ``train.threads`` times)."""
        gen, cpu = self.gen.get_state(), torch.get_rng_state()
        try:
            self._loss(self.cfg.kl_weight)[0].backward()
        finally:
            self.opt.zero_grad(set_to_none=True)
            self.gen.set_state(gen)
            torch.set_rng_state(cpu)

    def set_threads(self) -> str | None:
        """The thread count of a run given none (``train.threads``): the one its checkpoint records, else
        measured on its own steps; one line saying which, or None where the count is the user's or not ours
        to choose (GPU, several processes, OMP_NUM_THREADS)."""
        if self.cfg.threads or self.device.type != "cpu" or self.dist.world > 1 or threads_pinned():
            return None
        if self.threads_chosen:
            torch.set_num_threads(self.threads_chosen)
            return f"threads: {self.threads_chosen} (as the run's checkpoint records; --threads N sets it)"
        n, line = choose_threads(self._probe_step, self.cfg.steps - self.step)
        torch.set_num_threads(n)
        self.threads_chosen = n
        return line

    def sample_grid(self) -> None:
        """Guides from held-out data in the first column, guided samples (EMA weights) to the right."""
        cfg = self.cfg
        if self._guides is None:  # read once: for image data sets this loads files
            self._guides, _ = eval_set(cfg, 8)
        x = self._guides
        g = torch.Generator().manual_seed(1234)
        mu, var = self.ema.encoder(x.to(self.device))
        z = (mu[:, None] + var.sqrt()[:, None] * torch.randn(8, 7, cfg.latent_dim, generator=g).to(self.device))
        if self.baseline:  # decoded posterior samples
            with torch.no_grad():
                s = self.ema.decode(z.reshape(56, -1))
        else:
            s = sample(self.ema, self.abar_np, (56, cfg.channels, cfg.image_size, cfg.image_size),
                       z=z.reshape(56, -1), steps=min(50, cfg.T), scale=cfg.sampling_scale, generator=g)
        grid = torch.cat([x[:, None].to(s.device), s.reshape(8, 7, *s.shape[1:])], dim=1).flatten(0, 1)
        save_grid(grid, self.run_dir / "samples" / f"step_{self.step:07d}.png", nrow=8)

    def run(self, until: int | None = None) -> None:
        """Train to cfg.steps (or stop early at step ``until``, checkpointed, to be resumed later)."""
        cfg, main = self.cfg, self.dist.main
        stop = min(cfg.steps, until) if until is not None else cfg.steps
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "config.json", cfg.to_dict())
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        note = self.set_threads() if self.step < stop else None
        if main and note:
            print(note, file=sys.stderr, flush=True)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not main, desc="train", dynamic_ncols=True)
        t0, window = time.time(), []
        # the bar closes (ending its line) whatever happens: an error then starts a line of its own
        with bar, open(self.run_dir / "metrics.jsonl", "a") if main else open(os.devnull, "w") as log:
            while self.step < stop:
                stats = self.train_step()
                window.append(stats)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    avg = {k: sum(s[k] for s in window) / len(window) for k in window[0]}
                    avg.update(step=self.step, time=round(time.time() - t0, 2))
                    log.write(json.dumps(avg) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{avg['loss']:.1f}", kl=f"{avg['kl']:.2f}", var0=f"{avg['var0']:.3f}")
                    window = []
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step < stop:
                    self.checkpoint()
                if main and cfg.sample_every and self.step % cfg.sample_every == 0:
                    ticker = Stages(log=tqdm.write)  # a line every 10 s while the grid samples (the bar stands)
                    ticker.begin(f"sample grid at step {self.step}")
                    try:
                        self.sample_grid()
                    finally:
                        ticker.close()
        self.checkpoint()
        if self.step < cfg.steps:
            return
        digests = self.dist.gather(weights_digest(self.model))
        if main:
            if len(set(digests)) != 1:
                raise RuntimeError(f"ranks finished with different weights: {digests}")
            write_json(self.run_dir / "ranks.json", {"world": self.dist.world, "weights_sha256": digests})
        self.dist.barrier()


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer, to check that data-parallel ranks agree bit for bit."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines written after the checkpoint so the log matches the weights."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(ln + "\n" for ln in keep))

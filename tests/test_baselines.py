"""VAE and beta-VAE baselines (train/baselines.py): their objective, training and evaluation."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from train.baselines import VAE, vae_beta, vae_loss

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_negative_log_likelihood_is_the_closed_form(fresh_seed, likelihood):
    cfg = tiny_config(model="vae", vae_likelihood=likelihood, vae_sigma=0.3, latent_dim=4)
    model = VAE(cfg)
    g = torch.Generator().manual_seed(fresh_seed)
    x = torch.rand(5, 1, 16, 16, generator=g) * 2 - 1
    z = torch.randn(5, 4, generator=g)
    out = model.decoder(z)
    assert out.shape == x.shape
    if likelihood == "gaussian":
        want = ((x - out) ** 2).sum((1, 2, 3)) / (2 * 0.3**2)
    else:
        p = torch.sigmoid(out)
        t = (x + 1) / 2
        want = -(t * p.log() + (1 - t) * (1 - p).log()).sum((1, 2, 3))
    assert torch.allclose(model.nll(x, z), want, rtol=1e-4)
    assert model.decode(z).min() >= -1 and model.decode(z).max() <= 1


def test_loss_is_reconstruction_plus_beta_kl(fresh_seed):
    cfg = tiny_config(model="beta-vae", vae_beta=4.0, latent_dim=4)
    assert vae_beta(cfg) == 4.0 and vae_beta(cfg.replace(model="vae")) == 1.0
    model = VAE(cfg)
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(fresh_seed)) * 2 - 1
    loss, st = vae_loss(model, x, cfg, 4.0, torch.Generator().manual_seed(fresh_seed))
    assert math.isclose(st["loss"], st["rec"] + 4.0 * st["kl"], rel_tol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_baseline_trains_evaluates_and_is_refused_by_export(tmp_path):
    run = tmp_path / "vae"
    args = ["--config", "disks", "--model", "beta-vae", "--image-size", "16", "--disk-radius", "3", "--enc-channels",
            "8,8", "--enc-hidden", "16", "--batch", "8", "--steps", "4", "--warmup", "2", "--log-every", "2",
            "--sample-every", "4", "--eval-n", "100", "--n-train", "64", "--latent-dim", "3"]
    r = subprocess.run([sys.executable, str(ROOT / "train" / "run.py"), *args, "--out", str(run)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads((run / "eval.json").read_text())
    assert ev["model"] == "beta-vae" and "generation" not in ev and "guidance_gain" not in ev
    assert 0 <= ev["summary"]["mig"] <= 1 and set(ev["factors"]["factor_axes"]) == {"x", "y", "background"}
    assert (run / "samples" / "step_0000004.png").is_file() and (run / "latent_grids.png").is_file()
    r = subprocess.run([sys.executable, str(ROOT / "export" / "run.py"), str(run), "-o", str(tmp_path / "b")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "beta-vae baseline" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "b").exists()
    r = subprocess.run([sys.executable, str(ROOT / "train" / "run.py"), "--config", "disks", "--model", "gan"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--model expects one of sami, vae, beta-vae" in r.stderr

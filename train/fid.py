"""FID and class keeping of generated images, with a feature network the project trains on Fashion-MNIST.

The feature network (``FeatureNet``: three conv layers with batch normalisation, global average pooling to 128 features, a linear
class head) is trained on Fashion-MNIST's training split (seeded, ``train_feature_net``) and cached as a file.
Its FID is the Frechet distance between Gaussians fitted to its 128 features of two image sets: the same
formula as Inception FID, on other features, so its values are **not comparable with Inception FID** (they
are named ``fid_fashion_features``). Its class head also decides whether a guided sample kept its guide's
class (``class_keeping``).

Where the user has the standard FID Inception network as a TorchScript file (``inception-2015-12-05.pt``, as
published with NVIDIA's StyleGAN2-ADA/3 metrics: uint8 [N, 3, H, W] in, 2048 features out with
``return_features=True``), ``inception_features`` gives the standard Inception FID; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

FEATURE_NET_VERSION = 3  # 3: the last pooling keeps a 4 x 4 layout (v2 averaged it away: 86.1% on the test set)


class FeatureNet(nn.Module):
    def __init__(self, channels: int = 1, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveMaxPool2d(4), nn.Flatten(),
            nn.Linear(128 * 16, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def default_cache() -> Path:
    return Path(os.environ.get("SAMI_CACHE", Path.home() / ".cache" / "sami-rt"))


def train_feature_net(x: torch.Tensor, y: torch.Tensor, epochs: int = 8, seed: int = 0, lr: float = 1e-3, progress=print,
                      device: str = "cpu") -> FeatureNet:
    """Adam (learning rate ``lr``), batch 128, ``epochs`` passes over (x, y) in a seeded order, on ``device``
    (the same recipe anywhere; the weights differ between devices only by rounding). Returned on the CPU."""
    torch.manual_seed(seed)
    net = FeatureNet(x.shape[1], int(y.max()) + 1).to(device)
    opt = torch.optim.Adam(net.parameters(), lr)
    g = torch.Generator().manual_seed(seed)
    x, y = x.to(device), y.to(device)
    for ep in range(epochs):
        order = torch.randperm(len(x), generator=g).to(device)
        for lo in range(0, len(x), 128):
            i = order[lo : lo + 128]
            loss = nn.functional.cross_entropy(net(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        progress(f"feature network: epoch {ep + 1}/{epochs}, last batch loss {loss.item():.3f}")
    return net.cpu().eval()


def fashion_feature_net(cfg, cache: Path | None = None, progress=print, device: str = "cpu") -> tuple[FeatureNet, float]:
    """The project's Fashion-MNIST feature network for the run's image size, trained once (on ``device``) and
    cached (``$SAMI_CACHE``, default ~/.cache/sami-rt); returns it, on the CPU, and its test-set class accuracy."""
    from sami_rt.media.files import atomic_path
    from train.data import load_fashion_mnist

    path = (cache or default_cache()) / f"fashion-feature-net-v{FEATURE_NET_VERSION}-{cfg.image_size}px.pt"
    x_te, y_te = load_fashion_mnist(cfg.data_path, "test", cfg.image_size)
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = FeatureNet()
        net.load_state_dict(state)
        net.eval()
    else:
        progress(f"training the Fashion-MNIST feature network (once; cached as {path})")
        x_tr, y_tr = load_fashion_mnist(cfg.data_path, "train", cfg.image_size)
        net = train_feature_net(x_tr, y_tr, progress=progress, device=device)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(net.state_dict(), tmp)
    return net, float((predict(net, x_te) == y_te.numpy()).mean())


@torch.no_grad()
def features(net: FeatureNet, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    return torch.cat([net.features(x[lo : lo + batch]) for lo in range(0, len(x), batch)]).double().numpy()


@torch.no_grad()
def predict(net: FeatureNet, x: torch.Tensor, batch: int = 500) -> np.ndarray:
    return torch.cat([net(x[lo : lo + batch]).argmax(1) for lo in range(0, len(x), batch)]).numpy()


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """||m1 - m2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) of Gaussians fitted to feature rows."""
    m1, m2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
    # tr (S1 S2)^(1/2) = sum of the square roots of the eigenvalues of the symmetric S1^(1/2) S2 S1^(1/2)
    w, V = np.linalg.eigh(s1)
    r1 = (V * np.sqrt(np.maximum(w, 0))) @ V.T
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.maximum(ev, 0)).sum())


@torch.no_grad()
def inception_features(path: str | Path, x: torch.Tensor, batch: int = 100) -> np.ndarray:
    """2048 pool features of the TorchScript FID Inception network in ``path`` for images [N, C, H, W] in
    [-1, 1] (grey repeated to RGB, uint8 as the network expects)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Inception weights {p} not found (a TorchScript inception-2015-12-05.pt)")
    net = torch.jit.load(str(p), map_location="cpu").eval()
    out = []
    for lo in range(0, len(x), batch):
        u8 = ((x[lo : lo + batch].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if u8.shape[1] == 1:
            u8 = u8.repeat(1, 3, 1, 1)
        out.append(net(u8, return_features=True))
    return torch.cat(out).double().numpy()


def class_keeping(net: FeatureNet, samples: torch.Tensor, guide_labels: np.ndarray) -> float:
    """Share of guided samples [G * K, ...] (K per guide, guide-major) that the classifier puts in their guide's
    class."""
    pred = predict(net, samples)
    rep = np.repeat(np.asarray(guide_labels), len(samples) // len(guide_labels))
    return float((pred == rep).mean())


@torch.no_grad()
def generate_samples(model, cfg, abar, n: int, z: torch.Tensor | None, steps: int, seed: int,
                     interval=(0.0, 1.0)) -> torch.Tensor:
    """SAMI: DDPM samples, guided by z at the run's sampling scale over the guidance ``interval`` (None:
    unconditional). A VAE baseline: its decoder's mean image of z (None: z drawn from the prior)."""
    g = torch.Generator().manual_seed(seed)
    if cfg.model != "sami":
        if z is None:
            z = torch.randn(n, cfg.latent_dim, generator=g)
        return model.decode(z).clamp(-1, 1)
    from train.sampling import sample

    return sample(model, abar, (n, cfg.channels, cfg.image_size, cfg.image_size), z=z, steps=min(steps, cfg.T),
                  scale=float(cfg.sampling_scale), generator=g, interval=interval)


def sample_quality(model, cfg, abar, out_dir: Path, n: int = 1000, steps: int = 100, seed: int = 0,
                   n_guides: int = 16, per_guide: int = 8, inception: str | None = None, progress=print) -> dict:
    """FID (project features; Inception too with ``inception``) of n unconditional and n guided samples (z a
    posterior sample of each of the first n test images) against the whole test split, and the class keeping
    of ``per_guide`` guided samples of each of the first ``n_guides`` test images, drawn as
    ``guided_classes.png``."""
    from train.data import load_fashion_mnist
    from train.labelled import FASHION_CLASSES
    from train.natural import image_table

    net, acc = fashion_feature_net(cfg, progress=progress)
    x_te, y_te = load_fashion_mnist(cfg.data_path, "test", cfg.image_size)
    ref = features(net, x_te)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        mu, var = model.encoder(x_te[:n])
    z = mu + var.sqrt() * torch.randn(mu.shape, generator=g)
    progress(f"sample quality: {n} unconditional samples")
    unc = generate_samples(model, cfg, abar, n, None, steps, seed + 1)
    progress(f"sample quality: {n} guided samples")
    gui = generate_samples(model, cfg, abar, n, z, steps, seed + 2)
    out = {"feature_net_test_accuracy": acc, "n": n, "steps": steps,
           "fid_fashion_features": {"unconditional": frechet_distance(features(net, unc), ref),
                                    "guided": frechet_distance(features(net, gui), ref),
                                    "test_split_half_vs_other_half": frechet_distance(ref[:5000], ref[5000:])}}
    if inception:
        ref_i = inception_features(inception, x_te)
        out["fid_inception"] = {"unconditional": frechet_distance(inception_features(inception, unc), ref_i),
                                "guided": frechet_distance(inception_features(inception, gui), ref_i)}
    with torch.no_grad():
        mu_g, var_g = model.encoder(x_te[:n_guides])
    zg = (mu_g[:, None] + var_g.sqrt()[:, None] * torch.randn(n_guides, per_guide, cfg.latent_dim, generator=g))
    progress(f"sample quality: {per_guide} guided samples of {n_guides} test images")
    s = generate_samples(model, cfg, abar, n_guides * per_guide, zg.reshape(-1, cfg.latent_dim), steps, seed + 3)
    labels = y_te.numpy()[:n_guides]
    out["class_keeping"] = class_keeping(net, s, labels)
    out["class_keeping_unconditional"] = class_keeping(net, unc[: n_guides * per_guide], labels)
    pred = predict(net, s).reshape(n_guides, per_guide)
    out["class_keeping_per_guide"] = (pred == labels[:, None]).mean(1).tolist()
    rows = [[x_te[i]] + list(s[i * per_guide : (i + 1) * per_guide]) for i in range(n_guides)]
    names = [f"{FASHION_CLASSES[c]}\n{int((pred[i] == c).sum())}/{per_guide} kept" for i, c in enumerate(labels)]
    image_table(rows, names, ["guide"] + [f"sample {k}" for k in range(per_guide)],
                (f"guided samples (scale {cfg.sampling_scale:g})" if cfg.model == "sami" else
                 f"{cfg.model}: decoded posterior samples") + f": class kept by the project's classifier in "
                f"{out['class_keeping']:.0%}", Path(out_dir) / "guided_classes.png")
    return out

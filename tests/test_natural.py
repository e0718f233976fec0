"""The natural-image analyses (train/labelled.py, train/natural.py, train/fid.py) against closed forms, and on
the real Fashion-MNIST files (Debian package dataset-fashion-mnist; CI installs it)."""

import os

import numpy as np
import pytest
import torch

from train.data import DataError, load_fashion_mnist
from train.fid import FeatureNet, frechet_distance, predict, train_feature_net
from train.labelled import attribute_probes, linear_probe, one_vs_rest, participation_ratio
from train.natural import global_axes


def fashion_or_skip(split="test"):
    try:
        return load_fashion_mnist("", split)
    except DataError:
        if os.environ.get("CI"):
            pytest.fail("CI must install the Debian package dataset-fashion-mnist (.ci/run does)")
        pytest.skip("Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")


def test_participation_ratio_ends_and_closed_form(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    D = int(rng.integers(3, 40))
    one = np.zeros((1, D))
    one[0, rng.integers(D)] = rng.normal() * 5
    same = np.full((1, D), rng.normal()) * np.sign(rng.normal(size=D))
    assert participation_ratio(one)[0] == pytest.approx(1.0)
    assert participation_ratio(same)[0] == pytest.approx(np.sqrt(D))
    w = rng.normal(size=(5, D))
    k = int(rng.integers(1, D + 1))  # k axes equal, the rest zero: sqrt(k)
    w_k = np.zeros(D)
    w_k[rng.permutation(D)[:k]] = 2.5
    assert participation_ratio(w_k[None])[0] == pytest.approx(np.sqrt(k))
    expect = [np.sqrt((r**2).sum() ** 2 / (r**4).sum()) for r in w]
    np.testing.assert_allclose(participation_ratio(w), expect, rtol=1e-12)
    assert participation_ratio(w * 7.0) == pytest.approx(participation_ratio(w))  # scale-free


def test_probes_find_a_class_carried_by_one_axis(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    n, D, C = 1500, 6, 4
    y = rng.integers(C, size=n)
    codes = rng.normal(size=(n, D))
    codes[:, 2] = 3.0 * y + 0.2 * rng.normal(size=n)  # class is a linear function of axis 2 alone
    acc = linear_probe(codes[:1000], y[:1000], codes[1000:], y[1000:])["accuracy"]
    assert acc > 0.95
    noise = linear_probe(codes[:1000, [0, 1]], y[:1000], codes[1000:, [0, 1]], y[1000:])["accuracy"]
    assert noise < 0.45  # chance is 1/4
    a = one_vs_rest(y, C)
    assert a.shape == (n, C) and (a.sum(1) == 1).all() and (a.argmax(1) == y).all()
    # one attribute decided by axis 2 alone -> participation ratio near 1
    attr = (codes[:, 2] > 4.5).astype(int)[:, None]
    res = attribute_probes(codes[:1000], attr[:1000], codes[1000:], attr[1000:])
    assert res["balanced_accuracy"][0] > 0.95 and res["participation_ratio"][0] < 1.3


class _StubEncoder(torch.nn.Module):
    """mu = W x, var fixed per axis except axis 2, whose variance depends on the image."""

    def __init__(self, W, var0):
        super().__init__()
        self.W, self.var0 = W, var0

    def forward(self, x):
        f = x.flatten(1)
        mu = f @ self.W.T
        var = self.var0.expand(len(x), -1).clone()
        var[:, 2] = var[:, 2] * torch.exp(2 * f[:, 0])  # sensitive to the image
        return mu, var


def test_global_axis_measure_closed_form(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    N, P = 800, 12
    x = torch.randn(N, 1, 1, P, generator=g)
    W = torch.zeros(3, P)
    W[0, 0] = 0.05  # axis 0: clean means barely differ; wide constant posterior -> global
    W[1, 1] = 2.0   # axis 1: means spread widely -> image-specific
    W[2, 2] = 0.05  # axis 2: like axis 0 but its posterior variance depends on the image
    var0 = torch.tensor([[1.0, 0.01, 1.0]])
    model = type("M", (), {"encoder": _StubEncoder(W, var0)})()
    abar = np.linspace(0.999, 0.001, 100)
    mu, var = (a.double().numpy() for a in model.encoder(x))
    res = global_axes(model, abar, x, mu, var, seed=fresh_seed)
    assert res["abar"] == pytest.approx(0.1, abs=0.01)
    pop = mu.var(0)
    share = pop / (pop + var.mean(0))
    np.testing.assert_allclose(res["spread_share"], share, rtol=1e-9)
    assert res["sensitivity"][0] == pytest.approx(0.0, abs=1e-9) and res["sensitivity"][2] > 0.5
    assert res["ranking"][0] == 0 and res["ranking"][-1] == 1
    assert 0 <= min(res["score"]) and max(res["score"]) <= 1


def test_frechet_distance_against_the_gaussian_closed_form(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    D, n = 4, 200_000
    m1, m2 = rng.normal(size=D), rng.normal(size=D)
    s1, s2 = rng.uniform(0.5, 2, D), rng.uniform(0.5, 2, D)
    f1 = m1 + s1 * rng.normal(size=(n, D))
    f2 = m2 + s2 * rng.normal(size=(n, D))
    exact = ((m1 - m2) ** 2).sum() + ((s1 - s2) ** 2).sum()  # diagonal covariances
    # standard error of the estimate: 2 (m1 - m2) . (error of the mean difference), and 2 (s1 - s2) . (error of
    # the sd difference), per dimension; it reaches 0.05 (the former tolerance) for seed 1655649108. Measured over
    # 150 seeds: (estimate - exact) / se has sd 0.95, at most 3.4 in size.
    se = np.sqrt((4 * (m1 - m2) ** 2 * (s1**2 + s2**2)).sum() / n + (2 * (s1 - s2) ** 2 * (s1**2 + s2**2)).sum() / n)
    assert frechet_distance(f1, f2) == pytest.approx(exact, abs=5 * se)
    assert frechet_distance(f1[: n // 2], f1[n // 2 :]) < 0.01


def test_feature_network_learns_fashion_mnist(fresh_seed):
    x_te, y_te = fashion_or_skip("test")
    x_tr, y_tr = load_fashion_mnist("", "train")
    # one pass over 8,000 images: 0.81-0.83 on three seeds (feature network v3), a pass taking ~25 s on one thread
    i = torch.randperm(len(x_tr), generator=torch.Generator().manual_seed(fresh_seed))[:8000]
    net = train_feature_net(x_tr[i], y_tr[i], epochs=1, seed=fresh_seed, progress=lambda s: None)
    acc = float((predict(net, x_te[:1000]) == y_te[:1000].numpy()).mean())
    assert acc > 0.6, acc  # chance is 0.1
    assert isinstance(net, FeatureNet) and net.features(x_te[:3]).shape == (3, 128)


def test_labelled_analyses_write_every_figure(tmp_path, fresh_seed):
    """An untrained small Fashion-MNIST model through every analysis: the files exist and the numbers are sane."""
    fashion_or_skip()
    from train.config import get_config
    from train.loop import build_model
    from train.natural import labelled_analyses

    cfg = get_config("fashion-mnist").replace(T=20, unet_channels=8, unet_mult=(1, 2), enc_channels=(8, 8),
                                              enc_hidden=16, latent_dim=6)
    model, cfg = build_model(cfg)
    model.eval()
    abar = np.cumprod(1 - np.linspace(1e-4, 0.2, cfg.T))
    res = labelled_analyses(model, cfg, abar, tmp_path, n_fit=300, n_test=200, steps=2, seed=fresh_seed,
                            progress=lambda s: None)
    for f in ("probes.png", "variance_spectra.png", "variance_spectra.csv", "traversal.png", "global_axes.png",
              "global_axes.csv", "probe_baselines.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert len(res["participation_ratio"]) == 10 and all(1 - 1e-9 <= p <= np.sqrt(6) + 1e-9
                                                          for p in res["participation_ratio"])
    assert 0 <= res["probe_accuracy"] <= 1 and sorted(res["global_axes"]["ranking"]) == list(range(6))
    b = res["probe_baselines"]
    assert b["dim"] == 6 and b["top_k"]["k"] == [1, 2, 3, 4, 6] and sorted(b["top_k"]["axis_order"]) == list(range(6))
    assert b["pixels"] > 0.6 and b["pca"] > 0.4, b  # chance 0.1: 300 real images carry their classes
    assert b["top_k"]["pca"][-1] == b["pca"]


def test_the_cross_validated_probe_against_a_grid_search_written_out(fresh_seed):
    """linear_probe(cv=True) against its twin: for each C of PROBE_CS, 3 stratified folds in order, the scaler
    fitted on each fold's training part; the C of the best mean fold accuracy (the first on a tie) refitted on
    all fit rows and scored. Pixel-like data: many weak, correlated features and few rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from train.labelled import PROBE_CS

    rng = np.random.default_rng(fresh_seed)
    n, d = 240, 60
    y = rng.integers(0, 3, 2 * n)
    x = (rng.normal(size=(3, d)) * 0.3)[y] + rng.normal(size=(2 * n, d)) @ rng.normal(size=(d, d)) * 0.3

    def fit(a, ya, c):
        m, s = a.mean(0), a.std(0)
        clf = LogisticRegression(C=c, max_iter=1000, random_state=0).fit((a - m) / s, ya)
        return lambda b: clf.predict((b - m) / s)

    folds = list(StratifiedKFold(3).split(x[:n], y[:n]))
    score = [np.mean([(fit(x[tr], y[tr], c)(x[te]) == y[te]).mean() for tr, te in folds]) for c in PROBE_CS]
    c = PROBE_CS[int(np.argmax(score))]
    want = (fit(x[:n], y[:n], c)(x[n:]) == y[n:]).mean()
    got = linear_probe(x[:n], y[:n], x[n:], y[n:], 0, cv=True)
    assert got["C"] == c and got["accuracy"] == pytest.approx(want, abs=1e-12), (got, c, want, score)
    assert linear_probe(x[:n], y[:n], x[n:], y[n:], 0)["C"] == 1.0


def test_probe_baselines_against_a_code_that_is_pca(fresh_seed):
    """A code that is the pixels' PCA itself, its axes ordered by decreasing variance (smallest 'posterior
    variance' first), scores exactly PCA's top-k curve; a code of pure noise scores near chance."""
    from sklearn.decomposition import PCA

    from train.natural import probe_baselines

    rng = np.random.default_rng(fresh_seed)
    means = rng.normal(size=(4, 64)) * 2
    y_fit, y_test = rng.integers(0, 4, 400), rng.integers(0, 4, 300)
    x_fit = (means[y_fit] + rng.normal(size=(400, 64))).reshape(400, 1, 8, 8)
    x_test = (means[y_test] + rng.normal(size=(300, 64))).reshape(300, 1, 8, 8)
    pca = PCA(n_components=5, random_state=0).fit(x_fit.reshape(400, -1))
    mu_fit, mu = pca.transform(x_fit.reshape(400, -1)), pca.transform(x_test.reshape(300, -1))
    perm = rng.permutation(5)  # the code's axes shuffled; their variances say the order back
    var = np.tile(perm + 1.0, (300, 1))  # code axis j is component perm[j]: its rank its variance
    b = probe_baselines(x_fit, y_fit, x_test, y_test, mu_fit[:, perm], mu[:, perm], var, seed=0)
    assert b["top_k"]["k"] == [1, 2, 3, 4, 5] and b["top_k"]["code"] == b["top_k"]["pca"]
    assert b["pixels"] > 0.9 and b["pca"] > 0.9, b  # well-separated classes
    noise = probe_baselines(x_fit, y_fit, x_test, y_test, rng.normal(size=(400, 5)), rng.normal(size=(300, 5)),
                            rng.uniform(size=(300, 5)), seed=0)
    assert noise["top_k"]["code"][-1] < 0.45 < noise["pca"], noise


def test_missing_fashion_mnist_is_one_line_saying_how_to_get_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "train" / "run.py"), "--config", "fashion-mnist", "--data-path",
                        str(tmp_path / "nowhere"), "--steps", "1", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "dataset-fashion-mnist" in lines[0] and "--data-path" in lines[0]


def test_shipped_fashion_mnist_bundle_carries_the_class():
    """The shipped fashion-mnist bundle (onnxruntime, no torch in the loop): a linear probe on posterior means,
    fitted on the first 30,000 training images and scored on the whole test split, reaches the acceptance bar
    (0.7587; 0.7588 fitted on all 60,000). Fixed sets make the number the model's, not a draw's: a probe fitted
    on 3,000 random training images and scored on 2,000 test images spread from 0.727 to 0.756 over five draws
    for the same bundle, around a bar of 0.75."""
    from sami_rt.runtime import Runtime, resolve_model

    x_te, y_te = fashion_or_skip("test")
    x_tr, y_tr = load_fashion_mnist("", "train")
    rt = Runtime(resolve_model("fashion-mnist"), device="cpu")
    assert rt.bundle.manifest.image.shape == (1, 32, 32) and rt.code_spread() is not None
    mu_fit, _ = rt.encode(x_tr[:30000].numpy())
    mu, var = rt.encode(x_te.numpy())
    assert np.isfinite(mu).all() and (var > 0).all()
    acc = linear_probe(mu_fit, y_tr[:30000].numpy(), mu, y_te.numpy())["accuracy"]
    assert acc >= 0.75, acc

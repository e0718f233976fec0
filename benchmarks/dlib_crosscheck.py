"""train/metrics.py against disentanglement_lib itself, on the same arrays.

    python -m benchmarks.dlib_crosscheck [--wheel PATH] [--model BUNDLE] [--seed 0] [--json OUT]

disentanglement_lib (Locatello et al. 2019) needs TensorFlow 1 and gin to import as a whole; its metric
functions on arrays (``mig._compute_mig``, ``dci._compute_dci``, ``sap_score._compute_sap``,
``modularity_explicitness.modularity``, ``factor_vae.compute_factor_vae``) need only numpy, scipy and
scikit-learn. This script fetches its wheel with ``pip download`` (or takes --wheel), unpacks it into a
temporary directory, stands in empty modules for gin, absl and six, and scores:

- synthetic codes of known structure (a noisy permutation of the factors, a rotation, random codes) on an
  integer factor grid;
- the real codes of a bundle (default: the shipped model, through the runtime's encoder) on fresh disks,
  their continuous factors in 20 equal-width classes.

Deterministic metrics (MIG, Modularity, SAP, DCI) must agree to 1e-3. The FactorVAE score draws its votes
differently (disentanglement_lib samples observations from a generator; train/metrics.py draws codes from
the given set, with replacement, which on a full factor grid is the same distribution), so the two agree
only within the vote sampling's spread: the script prints theirs over 5 seeds and ours over 5 seeds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine

ROOT = Path(__file__).resolve().parent.parent


def load_dlib(wheel: Path | None, tmp: Path):
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                        "disentanglement-lib==1.5"], check=True)
        wheel = next(tmp.glob("disentanglement_lib-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp / "x")
    gin = types.ModuleType("gin")
    gin.REQUIRED = object()
    gin.configurable = lambda *a, **k: (lambda f: f)
    gin.tf = types.ModuleType("gin.tf")
    absl = types.ModuleType("absl")
    absl.logging = types.SimpleNamespace(info=lambda *a, **k: None)
    six = types.ModuleType("six")
    six.moves = types.ModuleType("six.moves")
    six.moves.range = range
    sys.modules.update({"gin": gin, "gin.tf": gin.tf, "absl": absl, "absl.logging": absl.logging, "six": six,
                        "six.moves": six.moves})
    import importlib.util

    root = tmp / "x" / "disentanglement_lib"  # imported as a package from the unpacked wheel, sys.path untouched
    spec = importlib.util.spec_from_file_location("disentanglement_lib", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["disentanglement_lib"] = pkg
    spec.loader.exec_module(pkg)
    from disentanglement_lib.evaluation.metrics import dci, factor_vae, mig, modularity_explicitness, sap_score, utils

    utils.make_discretizer = lambda target, num_bins=20, discretizer_fn=None: utils._histogram_discretize(target, 20)
    return types.SimpleNamespace(dci=dci, factor_vae=factor_vae, mig=mig, mod=modularity_explicitness, sap=sap_score,
                                 utils=utils)


def theirs(dl, c_tr, y_tr, c_te, y_te, seed) -> dict:
    """disentanglement_lib's functions on [D, N] / [K, N] arrays. Its GradientBoostingClassifier is given the
    same random_state as ours (it leaves it unset): sklearn permutes features at each split, so two unseeded
    fits differ by ~1e-3 in DCI, which is the estimator's own spread, not a difference of definition."""
    import functools

    from sklearn import ensemble

    dl.dci.ensemble = types.SimpleNamespace(
        GradientBoostingClassifier=functools.partial(ensemble.GradientBoostingClassifier, random_state=seed))
    mus, ys, mus_t, ys_t = c_tr.T, y_tr.T, c_te.T, y_te.T
    d = dl.dci._compute_dci(mus, ys, mus_t, ys_t)
    mi = dl.utils.discrete_mutual_info(dl.utils._histogram_discretize(mus, 20), ys)
    return {"mig": float(dl.mig._compute_mig(mus, ys)["discrete_mig"]), "modularity": float(dl.mod.modularity(mi)),
            "sap": float(dl.sap._compute_sap(mus, ys, mus_t, ys_t, False)["SAP_score"]),
            "dci_disentanglement": float(d["disentanglement"]), "dci_completeness": float(d["completeness"]),
            "dci_informativeness": float(d["informativeness_test"])}


def ours(c_tr, y_tr, c_te, y_te, seed) -> dict:
    from train.metrics import dci, mig, modularity, sap

    d = dci(c_tr, y_tr, c_te, y_te, seed)
    return {"mig": mig(c_tr, y_tr), "modularity": modularity(c_tr, y_tr), "sap": sap(c_tr, y_tr, c_te, y_te, seed),
            "dci_disentanglement": d["disentanglement"], "dci_completeness": d["completeness"],
            "dci_informativeness": d["informativeness"]}


def factor_vae_pair(dl, codes_of, sizes, seed) -> tuple[float, list[float]]:
    """Theirs on a grid 'data set' whose observation is the grid index, against ours on the whole grid."""
    from train.metrics import factor_vae_score

    grid = np.stack(np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    codes = codes_of(grid)
    strides = np.cumprod((1,) + tuple(sizes[::-1]))[:-1][::-1]

    class Grid:
        num_factors = len(sizes)

        def sample_factors(self, n, rs):
            return np.stack([rs.randint(k, size=n) for k in sizes], 1)

        def sample_observations_from_factors(self, f, rs):
            return f @ strides

        def sample_observations(self, n, rs):
            return self.sample_observations_from_factors(self.sample_factors(n, rs), rs)

    rep = lambda idx: codes[idx]  # noqa: E731
    import disentanglement_lib.evaluation.metrics.factor_vae as fv

    fv._prune_dims = lambda v, threshold=0.05: np.sqrt(v) >= threshold  # the published configuration's threshold
    t = [float(fv.compute_factor_vae(Grid(), rep, np.random.RandomState(s), None, batch_size=64, num_train=10000,
                                     num_eval=5000, num_variance_estimate=10000)["eval_accuracy"])
         for s in range(seed, seed + 5)]
    o = [factor_vae_score(codes, grid, seed=s)["eval_accuracy"] for s in range(seed, seed + 5)]
    return t, o


def bundle_codes(model: str | None, n: int, seed: int):
    """Posterior means of fresh disks (the bundle's own disk settings) through the runtime's encoder."""
    from sami_rt import Runtime
    from train.config import Config
    from train.data import disk_options, make_disks

    rt = Runtime(model, device="cpu")
    cfg = Config.from_dict(rt.bundle.manifest.training["config"])
    x, f = make_disks(n, seed, **disk_options(cfg))
    mu, _ = rt.encode(x.numpy())
    return np.asarray(mu, np.float64), f.numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, help="a local disentanglement_lib wheel (default: pip download 1.5)")
    ap.add_argument("--model", help="bundle for the real-code check (default: the shipped model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    report_machine()
    from train.metrics import factor_classes

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        dl = load_dlib(args.wheel, Path(tmp))
        rng = np.random.default_rng(args.seed)
        sizes = (6, 10, 8)
        y = np.stack([rng.integers(0, k, 3000) for k in sizes], 1)
        Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        cases = {"permuted": y[:, [2, 0, 1]] + 0.05 * rng.normal(size=y.shape),
                 "rotated": (y + 0.05 * rng.normal(size=y.shape)) @ Q,
                 "random": rng.normal(size=(3000, 4))}
        mu, f = bundle_codes(args.model, 3000, 7_000_001 + args.seed)
        cases["shipped model"] = mu
        for name, c in cases.items():
            yy = factor_classes(f) if name == "shipped model" else y
            a, b = theirs(dl, c[:2000], yy[:2000], c[2000:], yy[2000:], args.seed), ours(c[:2000], yy[:2000], c[2000:], yy[2000:],
                                                                                args.seed)
            rows[name] = {"disentanglement_lib": a, "ours": b, "max_abs_diff": max(abs(a[k] - b[k]) for k in a)}
            print(f"{name:14s} max |diff| {rows[name]['max_abs_diff']:.2e}  " +
                  "  ".join(f"{k} {b[k]:.4f}/{a[k]:.4f}" for k in a), flush=True)
        noise = lambda g, s: s * np.random.default_rng(1).normal(size=g.shape)  # noqa: E731
        grid_sizes = (6, 10, 8, 5)  # 2,400 combinations: every value of a factor has >= 240 codes
        for name, fn in {"permuted": lambda g: g[:, [2, 0, 1, 3]] + noise(g, 0.05),
                         "permuted, noisy": lambda g: g[:, [2, 0, 1, 3]] * [0.3, 1, 1, 1] + noise(g, 1.0),
                         "random": lambda g: noise(np.zeros((len(g), 4)), 1.0)}.items():
            t, o = factor_vae_pair(dl, fn, grid_sizes, args.seed)
            rows[f"factor_vae {name}"] = {"disentanglement_lib_over_5_seeds": t, "ours_over_5_seeds": o}
            print(f"FactorVAE {name}: disentanglement_lib {np.mean(t):.4f} ({min(t):.4f}-{max(t):.4f}), ours "
                  f"{np.mean(o):.4f} ({min(o):.4f}-{max(o):.4f}), 5 seeds each", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

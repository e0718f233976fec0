"""Each metric on hand-made codes whose answer is known, and against independent transcriptions of the published
definitions (disentanglement_lib's conventions; benchmarks/dlib_crosscheck.py runs disentanglement_lib itself)."""

import numpy as np
import pytest

from train.metrics import (
    all_metrics, dci, dci_random_forest, disentanglement_metrics, factor_classes, factor_vae_score, histogram_discretize,
    knn_r2, linear_r2, mig, mig_binned, modularity, modularity_binned, sap, sap_continuous, tad,
)


@pytest.fixture
def codes(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    f_fit, f_test = rng.uniform(size=(3000, 3)), rng.uniform(size=(1000, 3))
    noise = lambda a: a + 0.002 * rng.normal(size=a.shape)  # noqa: E731
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    while np.abs(Q).max() > 0.9:  # a real rotation mixes every axis
        Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return {
        "factors": (f_fit, f_test),
        "perfect": (noise(f_fit), noise(f_test)),
        "rotated": (noise(f_fit) @ Q, noise(f_test) @ Q),
        "duplicated": (np.c_[noise(f_fit)[:, [0, 0]], noise(f_fit)[:, 1:]], np.c_[noise(f_test)[:, [0, 0]], noise(f_test)[:, 1:]]),
        "noise": (rng.normal(size=(3000, 3)), rng.normal(size=(1000, 3))),
    }


def test_perfect_code_scores_near_one(codes):
    f_fit, f_test = codes["factors"]
    c_fit, c_test = codes["perfect"]
    m = all_metrics(c_fit[:600], f_fit[:600], c_test, f_test, ["a", "b", "c"])
    assert min(m["knn_r2"].values()) > 0.98 and min(m["linear_r2"].values()) > 0.99
    assert np.allclose(np.diag(m["axis_r2"]), 1, atol=1e-3)
    # continuous factors: their 20 classes and the code's 20 bins have edges a little apart, so MIG stays below 1
    assert m["mig"] > 0.75 and m["modularity"] > 0.95 and m["factor_vae"] > 0.98
    assert m["dci_disentanglement"] > 0.9 and m["dci_completeness"] > 0.9 and m["dci_informativeness"] > 0.9
    L = m["legacy"]
    assert L["mig_binned"] > 0.85 and L["modularity_binned"] > 0.95 and L["sap_continuous"] > 0.95
    assert L["dci_random_forest"]["disentanglement"] > 0.9 and L["dci_random_forest"]["completeness"] > 0.9


def test_rotation_keeps_information_but_loses_disentanglement(codes):
    f_fit, f_test = codes["factors"]
    p, r = codes["perfect"], codes["rotated"]
    assert min(knn_r2(*r[:1], f_fit, r[1], f_test)) > 0.95  # still predictive (k-NN is rotation invariant)
    assert min(linear_r2(r[0], f_fit, r[1], f_test)) > 0.99
    assert mig_binned(r[1], f_test) < mig_binned(p[1], f_test) - 0.3
    assert sap_continuous(r[1], f_test) < sap_continuous(p[1], f_test) - 0.3
    assert modularity_binned(r[1], f_test) < modularity_binned(p[1], f_test) - 0.05
    assert dci_random_forest(*r[:1], f_fit, r[1], f_test)["disentanglement"] < dci_random_forest(p[0], f_fit, p[1], f_test)["disentanglement"] - 0.2


def test_duplicated_code_loses_mig_sap_and_completeness(codes):
    f_fit, f_test = codes["factors"]
    p, d = codes["perfect"], codes["duplicated"]
    assert mig_binned(d[1], f_test) < mig_binned(p[1], f_test) - 0.2  # factor a's gap is ~0
    assert sap_continuous(d[1], f_test) < sap_continuous(p[1], f_test) - 0.2
    assert dci_random_forest(d[0], f_fit, d[1], f_test)["completeness"] < dci_random_forest(p[0], f_fit, p[1], f_test)["completeness"] - 0.1
    assert modularity_binned(d[1], f_test) > 0.9  # each code still carries one factor: duplication is modular


def test_uninformative_code_scores_near_zero(codes):
    f_fit, f_test = codes["factors"]
    n = codes["noise"]
    assert max(knn_r2(n[0], f_fit, n[1], f_test)) < 0.05
    assert max(linear_r2(n[0], f_fit, n[1], f_test)) < 0.02
    assert mig_binned(n[1], f_test) < 0.05 and sap_continuous(n[1], f_test) < 0.02


# ------------------------------------------------------------------ disentanglement_lib conventions
def grid_factors(rng, n, sizes=(6, 10, 8)):
    """n draws of integer factor classes, uniform over a grid of the given sizes."""
    return np.stack([rng.integers(0, k, n) for k in sizes], 1)


def reference_mi(a, b):
    """MI in nats of two label arrays by explicit counting (the definition, written independently)."""
    n = len(a)
    out = 0.0
    for u in np.unique(a):
        for v in np.unique(b):
            pj = np.sum((a == u) & (b == v)) / n
            if pj > 0:
                out += pj * np.log(pj / (np.sum(a == u) / n * np.sum(b == v) / n))
    return out


def test_histogram_discretize_is_numpys_histogram_bins(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    x = rng.normal(size=(500, 3)) * [1, 10, 0.1]
    d = histogram_discretize(x, 20)
    for j in range(3):
        counts = np.histogram(x[:, j], 20)[0]
        # digitize on the left edges: bins 1..20, the maximum falls in bin 20 like np.histogram's last closed bin
        assert np.array_equal(np.bincount(d[:, j], minlength=21)[1:], counts)
    assert np.array_equal(factor_classes(np.c_[[3, 7, 3, 9]]), np.c_[[0, 1, 0, 2]])  # integer factors keep their classes


def test_mig_and_modularity_match_the_definitions_on_random_arrays(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    y = grid_factors(rng, 800)
    codes = np.c_[y[:, 1] + rng.normal(size=800), rng.normal(size=(800, 2)), y[:, 0] * 0.3 + rng.normal(size=800)]
    b = np.stack([np.digitize(c, np.histogram(c, 20)[1][:-1]) for c in codes.T], 1)
    M = np.array([[reference_mi(b[:, i], y[:, j]) for j in range(3)] for i in range(4)])
    H = np.array([reference_mi(y[:, j], y[:, j]) for j in range(3)])
    s = np.sort(M, 0)
    assert mig(codes, y) == pytest.approx(np.mean((s[-1] - s[-2]) / H), abs=1e-9)
    sq = M**2
    want = np.mean([1 - (r.sum() - r.max()) / (r.max() * 2) for r in sq])
    assert modularity(codes, y) == pytest.approx(want, abs=1e-9)


def test_dci_weights_follow_the_importance_matrix(fresh_seed, monkeypatch):
    """disentanglement / completeness from a known importance matrix (scipy's entropy, the published formulas)."""
    from scipy.stats import entropy
    from sklearn import ensemble

    rng = np.random.default_rng(fresh_seed)
    R = rng.uniform(size=(4, 3)) ** 3

    class Fixed:
        def __init__(self, **kw):
            self.j = Fixed.calls
            Fixed.calls += 1

        def fit(self, x, y):
            self.feature_importances_ = R[:, self.j]
            return self

        def predict(self, x):
            return np.zeros(len(x), int)

    Fixed.calls = 0
    monkeypatch.setattr(ensemble, "GradientBoostingClassifier", Fixed)
    y = grid_factors(rng, 50)
    out = dci(rng.normal(size=(50, 4)), y, rng.normal(size=(50, 4)), y)
    dis = 1 - entropy(R.T + 1e-11, base=3)
    com = 1 - entropy(R + 1e-11, base=4)
    assert out["disentanglement"] == pytest.approx(np.sum(dis * R.sum(1) / R.sum()), abs=1e-12)
    assert out["completeness"] == pytest.approx(np.sum(com * R.sum(0) / R.sum()), abs=1e-12)
    assert out["informativeness"] == pytest.approx(np.mean(y == 0), abs=1e-12)


@pytest.fixture
def coded(fresh_seed):
    """Factor classes on a grid and codes whose answers are known."""
    rng = np.random.default_rng(fresh_seed)
    y_tr, y_te = grid_factors(rng, 800), grid_factors(rng, 400)
    eps = lambda y: y + 0.01 * rng.normal(size=y.shape)  # noqa: E731
    # a rotation that mixes every axis: no entry above 0.75 (at 0.9, a rotation 26 degrees from the axes kept
    # Modularity at 0.90 for seed 2628450663, above the test's 0.9 bound; over 300 seeds at 0.75 its maximum
    # was 0.854)
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    while np.abs(Q).max() > 0.75:
        Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    perm = rng.permutation(3)
    while (perm == np.arange(3)).all():
        perm = rng.permutation(3)
    return {"y": (y_tr, y_te), "perm": (eps(y_tr[:, perm]), eps(y_te[:, perm])),
            "rot": (eps(y_tr) @ Q, eps(y_te) @ Q),
            "dup": (eps(y_tr[:, [0, 0, 1, 2]]), eps(y_te[:, [0, 0, 1, 2]])),
            "random": (rng.normal(size=(800, 3)), rng.normal(size=(400, 3)))}


def test_a_permuted_factor_code_scores_one(coded):
    y_tr, y_te = coded["y"]
    c_tr, c_te = coded["perm"]
    m = disentanglement_metrics(c_tr, y_tr, c_te, y_te, seed=1)
    for k in ("mig", "modularity", "dci_disentanglement", "dci_completeness", "dci_informativeness", "factor_vae"):
        assert m[k] > 0.97, (k, m[k])
    assert m["sap"] > 0.2  # a linear one-vs-rest SVM on one axis cannot separate middle classes: SAP stays below 1


def test_rotated_duplicated_and_random_codes_score_less(coded):
    y_tr, y_te = coded["y"]
    perm = disentanglement_metrics(*coded["perm"][:1], y_tr, coded["perm"][1], y_te, seed=1)
    rot = disentanglement_metrics(coded["rot"][0], y_tr, coded["rot"][1], y_te, seed=1)
    dup = disentanglement_metrics(coded["dup"][0], y_tr, coded["dup"][1], y_te, seed=1)
    rnd = disentanglement_metrics(coded["random"][0], y_tr, coded["random"][1], y_te, seed=1)
    assert rot["mig"] < perm["mig"] - 0.3 and rot["dci_disentanglement"] < perm["dci_disentanglement"] - 0.2
    assert rot["modularity"] < perm["modularity"] - 0.1 and rot["sap"] < perm["sap"]
    assert dup["mig"] < perm["mig"] - 0.2  # factor 0's two axes leave no gap
    assert dup["dci_completeness"] < perm["dci_completeness"] - 0.1
    assert dup["modularity"] > 0.95 and dup["factor_vae"] > 0.97  # each axis still carries one factor
    # a random code's SAP is the gap between two chance accuracies on 400 test codes: 0.003-0.039 over the seeds
    # tried (0.03 failed at seeds 5 and 13, 2 of 14); a permuted factor code's was 0.26-0.33 at those two
    assert rnd["mig"] < 0.03 and rnd["sap"] < 0.08 and rnd["dci_informativeness"] < 0.3
    # votes carry no factor: chance is 1/3 in expectation; with 64-code batches out of groups of ~50-70 test codes
    # the argmin repeats per group, so one draw scatters widely around it, but far below a factor code's ~1
    assert rnd["factor_vae"] < 0.7


def test_sap_of_binary_factors_is_the_accuracy_gap(fresh_seed):
    """A perfect axis separates a binary factor (accuracy 1); a random axis is at chance (0.5, balanced)."""
    rng = np.random.default_rng(fresh_seed)
    y = rng.integers(0, 2, (2000, 2))
    c = np.c_[y + 0.01 * rng.normal(size=y.shape), rng.normal(size=2000)]
    assert sap(c[:1000], y[:1000], c[1000:], y[1000:]) == pytest.approx(0.5, abs=0.06)


def test_factor_vae_score_is_seeded_and_robust_to_small_groups(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    y = grid_factors(rng, 300, (3, 40))
    c = y + 0.01 * rng.normal(size=y.shape)
    a, b = factor_vae_score(c, y, seed=5), factor_vae_score(c, y, seed=5)
    assert a == b and a["eval_accuracy"] > 0.97  # groups of ~7 codes for factor 1 still vote
    assert factor_vae_score(np.zeros((300, 2)) + 1e-3 * rng.normal(size=(300, 2)), y)["active_dims"] == 0


def test_tad_counts_attributes_with_one_axis_and_drops_redundant_ones(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    att = rng.integers(0, 2, (3000, 3))
    codes = np.c_[att[:, 0] + 0.1 * rng.normal(size=3000), -att[:, 1] + 0.1 * rng.normal(size=3000), rng.normal(size=(3000, 2))]
    t = tad(codes, att)
    assert t["tad_attributes"] == 2 and t["captured"] == [0, 1]  # attribute 2 has no axis (AUROC ~0.5)
    # per captured attribute: AUROC ~1 of its axis minus the best of the three chance axes (folded AUROC, >= 0.5).
    # A chance AUROC on ~1500/1500 codes has sd sqrt((n0 + n1 + 1) / (12 n0 n1)) ~ 0.0105, so the best of three
    # stays below 0.5 + 4 sd ~ 0.542 and tad above 2 (1 - 0.542) = 0.916; measured 0.941-0.993 over seeds 0-299
    # (median 0.974), 0.936 at seed 2383238648 (the earlier bound, 1.0 +- 0.06, failed there)
    assert 0.9 < t["tad"] <= 1.0, t["tad"]
    assert t["best_axis"][:2] == [0, 1]
    dup = tad(codes, np.c_[att, att[:, :1]])  # attribute 3 repeats 0: both are explained by the other
    assert dup["captured"] == [1]
    assert tad(codes, np.c_[att[:, :1], np.ones(3000, int)])["tad_attributes"] == 1  # a constant attribute never counts


def test_evaluate_metrics_scores_a_file_written_by_another_program(tmp_path, fresh_seed, capsys):
    import json

    from train.evaluate import main

    rng = np.random.default_rng(fresh_seed)
    y_tr, y_te = grid_factors(rng, 400), grid_factors(rng, 300)
    att = (y_te[:, :1] > 2).astype(np.uint8)
    c_tr = y_tr + 0.05 * rng.normal(size=y_tr.shape)
    c_te = y_te + 0.05 * rng.normal(size=y_te.shape)
    f = tmp_path / "codes.npz"
    np.savez(f, codes_train=c_tr.astype(np.float32), factors_train=y_tr, codes_test=c_te.astype(np.float32),
             factors_test=y_te, attributes=att)
    assert main(["--metrics", str(f), "--json", str(tmp_path / "m.json"), "--seed", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "m.json").read_text())
    assert printed == written
    assert set(written) == {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap",
                            "modularity", "factor_vae", "tad", "tad_attributes"}
    want = disentanglement_metrics(c_tr.astype(np.float32), y_tr, c_te.astype(np.float32), y_te, att, seed=3)
    assert written == pytest.approx(want, abs=1e-12)
    assert written["mig"] > 0.9 and written["tad_attributes"] == 1


@pytest.mark.parametrize("arrays, says", [
    (dict(codes_train=np.ones((4, 2))), "missing array(s) factors_train, codes_test, factors_test"),
    (dict(codes_train=np.ones((4, 2)), factors_train=np.ones((3, 1)), codes_test=np.ones((4, 2)),
          factors_test=np.ones((4, 1))), "codes_train and factors_train have different numbers of rows"),
    (dict(codes_train=np.ones((4, 2)), factors_train=np.ones((4, 1)), codes_test=np.ones((4, 3)),
          factors_test=np.ones((4, 1))), "different widths"),
    (dict(codes_train=np.ones(4), factors_train=np.ones((4, 1)), codes_test=np.ones((4, 2)),
          factors_test=np.ones((4, 1))), "codes_train must be a 2-d array"),
    (dict(codes_train=np.ones((4, 2)), factors_train=np.ones((4, 1)), codes_test=np.ones((4, 2)),
          factors_test=np.ones((4, 1)), attributes=np.full((4, 1), 2)), "attributes must be 0/1"),
])
def test_evaluate_metrics_refuses_a_bad_file_in_one_line(tmp_path, capsys, arrays, says):
    from train.evaluate import main

    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    assert main(["--metrics", str(f)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and says in err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["--metrics", str(tmp_path / "junk.npz")]) == 1
    assert "not a readable .npz" in capsys.readouterr().err

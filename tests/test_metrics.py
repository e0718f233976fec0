"""Each metric on hand-made codes whose answer is known."""

import numpy as np
import pytest

from train.metrics import all_metrics, dci, knn_r2, linear_r2, mig, modularity, sap


@pytest.fixture
def codes():
    rng = np.random.default_rng()
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
    m = all_metrics(c_fit, f_fit, c_test, f_test, ["a", "b", "c"])
    assert min(m["knn_r2"].values()) > 0.98 and min(m["linear_r2"].values()) > 0.99
    assert m["mig"] > 0.85 and m["modularity"] > 0.95 and m["sap"] > 0.95
    assert m["dci"]["disentanglement"] > 0.9 and m["dci"]["completeness"] > 0.9


def test_rotation_keeps_information_but_loses_disentanglement(codes):
    f_fit, f_test = codes["factors"]
    p, r = codes["perfect"], codes["rotated"]
    assert min(knn_r2(*r[:1], f_fit, r[1], f_test)) > 0.95  # still predictive (k-NN is rotation invariant)
    assert min(linear_r2(r[0], f_fit, r[1], f_test)) > 0.99
    assert mig(r[1], f_test) < mig(p[1], f_test) - 0.3
    assert sap(r[1], f_test) < sap(p[1], f_test) - 0.3
    assert modularity(r[1], f_test) < modularity(p[1], f_test) - 0.05
    assert dci(*r[:1], f_fit, r[1], f_test)["disentanglement"] < dci(p[0], f_fit, p[1], f_test)["disentanglement"] - 0.2


def test_duplicated_code_loses_mig_sap_and_completeness(codes):
    f_fit, f_test = codes["factors"]
    p, d = codes["perfect"], codes["duplicated"]
    assert mig(d[1], f_test) < mig(p[1], f_test) - 0.2  # factor a's gap is ~0
    assert sap(d[1], f_test) < sap(p[1], f_test) - 0.2
    assert dci(d[0], f_fit, d[1], f_test)["completeness"] < dci(p[0], f_fit, p[1], f_test)["completeness"] - 0.1
    assert modularity(d[1], f_test) > 0.9  # each code still carries one factor: duplication is modular


def test_uninformative_code_scores_near_zero(codes):
    f_fit, f_test = codes["factors"]
    n = codes["noise"]
    assert max(knn_r2(n[0], f_fit, n[1], f_test)) < 0.05
    assert max(linear_r2(n[0], f_fit, n[1], f_test)) < 0.02
    assert mig(n[1], f_test) < 0.05 and sap(n[1], f_test) < 0.02

"""Disentanglement and predictability metrics, implemented from their definitions.

codes [N, D] (posterior means), factors [N, K] (ground truth). Continuous factors and codes are
discretised into equal-width bins where a metric needs mutual information.

- k-NN / linear R^2: fit on one set, score on held-out codes (codes standardised with the fitting set).
- MIG (Chen et al. 2018): mean over factors of the gap between the two largest MI(code_i; factor_j),
  normalised by H(factor_j).
- DCI (Eastwood & Williams 2018): importance matrix R[i, j] from random-forest regressors; disentanglement
  = sum_i rho_i (1 - H_K(P_i.)), completeness = mean_j (1 - H_D(P_.j)).
- Modularity (Ridgeway & Driessen 2018): 1 - mean_i of the normalised squared deviation of code i's MI
  row from the ideal row that keeps only its largest entry.
- SAP (Kumar et al. 2018): mean over factors of the gap between the two largest R^2 of single-code linear
  regressions.
"""

from __future__ import annotations

import numpy as np


def _standardise(fit: np.ndarray, *others: np.ndarray):
    m, s = fit.mean(0), fit.std(0) + 1e-12
    return [(a - m) / s for a in (fit, *others)]


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - ((y - pred) ** 2).sum() / (((y - y.mean()) ** 2).sum() + 1e-300))


def knn_r2(codes_fit, factors_fit, codes_test, factors_test, k: int = 10) -> list[float]:
    """R^2 of k-nearest-neighbour regression of each factor from standardised codes."""
    from sklearn.neighbors import KNeighborsRegressor

    cf, ct = _standardise(codes_fit, codes_test)
    out = []
    for j in range(factors_fit.shape[1]):
        m = KNeighborsRegressor(n_neighbors=k).fit(cf, factors_fit[:, j])
        out.append(_r2(factors_test[:, j], m.predict(ct)))
    return out


def linear_r2(codes_fit, factors_fit, codes_test, factors_test) -> list[float]:
    """R^2 of least-squares linear regression (with intercept) of each factor from the codes."""
    A = np.c_[codes_fit, np.ones(len(codes_fit))]
    At = np.c_[codes_test, np.ones(len(codes_test))]
    out = []
    for j in range(factors_fit.shape[1]):
        w, *_ = np.linalg.lstsq(A, factors_fit[:, j], rcond=None)
        out.append(_r2(factors_test[:, j], At @ w))
    return out


def discretise(x: np.ndarray, bins: int = 20) -> np.ndarray:
    """Equal-width bins per column; a column with few distinct values keeps them as labels."""
    out = np.zeros(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        col = x[:, j]
        vals = np.unique(col)
        if len(vals) <= bins:
            out[:, j] = np.searchsorted(vals, col)
        else:
            edges = np.linspace(col.min(), col.max(), bins + 1)[1:-1]
            out[:, j] = np.digitize(col, edges)
    return out


def _mi(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nats) of two integer label arrays."""
    ja = np.unique(a, return_inverse=True)[1]
    jb = np.unique(b, return_inverse=True)[1]
    joint = np.zeros((ja.max() + 1, jb.max() + 1))
    np.add.at(joint, (ja, jb), 1)
    p = joint / joint.sum()
    pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())


def mi_matrix(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> np.ndarray:
    c, f = discretise(codes, bins), discretise(factors, bins)
    return np.array([[_mi(c[:, i], f[:, j]) for j in range(f.shape[1])] for i in range(c.shape[1])])


def mig(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> float:
    m = mi_matrix(codes, factors, bins)  # (D, K)
    f = discretise(factors, bins)
    H = np.array([_mi(f[:, j], f[:, j]) for j in range(f.shape[1])])
    top = np.sort(m, axis=0)[::-1]
    gap = top[0] - (top[1] if m.shape[0] > 1 else 0.0)
    return float(np.mean(gap / H))


def modularity(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> float:
    m = mi_matrix(codes, factors, bins)  # (D, K)
    K = m.shape[1]
    theta = m.max(1)
    ideal = np.zeros_like(m)
    ideal[np.arange(len(m)), m.argmax(1)] = theta
    delta = ((m - ideal) ** 2).sum(1) / (theta**2 * (K - 1) + 1e-12)
    return float(np.mean(1 - delta))


def sap(codes: np.ndarray, factors: np.ndarray) -> float:
    """Per (code, factor): R^2 of a linear fit of the factor on that single code (= squared correlation)."""
    c = (codes - codes.mean(0)) / (codes.std(0) + 1e-12)
    f = (factors - factors.mean(0)) / (factors.std(0) + 1e-12)
    S = (c.T @ f / len(c)) ** 2  # (D, K)
    top = np.sort(S, axis=0)[::-1]
    return float(np.mean(top[0] - (top[1] if S.shape[0] > 1 else 0.0)))


def importance_matrix(codes_fit, factors_fit, codes_test, factors_test, seed: int = 0):
    """R[i, j]: importance of code i for factor j (random forest), and each factor's held-out R^2."""
    from sklearn.ensemble import RandomForestRegressor

    D, K = codes_fit.shape[1], factors_fit.shape[1]
    R, info = np.zeros((D, K)), []
    for j in range(K):
        rf = RandomForestRegressor(n_estimators=50, max_depth=8, random_state=seed, n_jobs=1)
        rf.fit(codes_fit, factors_fit[:, j])
        R[:, j] = rf.feature_importances_
        info.append(_r2(factors_test[:, j], rf.predict(codes_test)))
    return R, info


def _entropy_norm(p: np.ndarray, base: int) -> np.ndarray:
    p = p / (p.sum(-1, keepdims=True) + 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return h / np.log(base)


def dci(codes_fit, factors_fit, codes_test, factors_test, seed: int = 0) -> dict:
    R, info = importance_matrix(codes_fit, factors_fit, codes_test, factors_test, seed)
    D, K = R.shape
    dis_i = 1 - _entropy_norm(R, K) if K > 1 else np.ones(D)
    rho = R.sum(1) / R.sum()
    comp_j = 1 - _entropy_norm(R.T, D) if D > 1 else np.ones(K)
    return {"disentanglement": float((rho * dis_i).sum()), "completeness": float(comp_j.mean()),
            "informativeness": info, "importance": R.tolist()}


def all_metrics(codes_fit, factors_fit, codes_test, factors_test, names) -> dict:
    knn = knn_r2(codes_fit, factors_fit, codes_test, factors_test)
    lin = linear_r2(codes_fit, factors_fit, codes_test, factors_test)
    return {
        "knn_r2": dict(zip(names, knn)),
        "linear_r2": dict(zip(names, lin)),
        "mig": mig(codes_test, factors_test),
        "dci": dci(codes_fit, factors_fit, codes_test, factors_test),
        "modularity": modularity(codes_test, factors_test),
        "sap": sap(codes_test, factors_test),
    }

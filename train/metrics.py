"""Disentanglement and predictability metrics, implemented from their definitions.

codes [N, D] (posterior means), factors [N, K] (ground truth as integer classes; continuous factors are
first binned into 20 equal-width classes by ``factor_classes``). The defaults follow disentanglement_lib
(Locatello et al. 2019), so that their numbers can be put next to published tables:

- MIG (Chen et al. 2018): codes in 20 equal-width bins (``histogram_discretize``), MI(code_i; factor_j) in
  nats, mean over factors of the gap between the two largest, over H(factor_j). On one set (the train set).
- Modularity (Ridgeway & Driessen 2018): from the same MI matrix, 1 - mean_i of
  (sum_j MI_ij^2 - max_j MI_ij^2) / (max_j MI_ij^2 (K - 1)); a code with no information scores 0.
- DCI (Eastwood & Williams 2018): one ``GradientBoostingClassifier`` (sklearn defaults) per factor on the
  codes, importance R[i, j] = its feature importances; disentanglement = sum_i rho_i (1 - H_K(R_i.)) with
  rho_i = R_i. / sum R, completeness = sum_j rho_j (1 - H_D(R_.j)) with rho_j = R_.j / sum R (entropies of
  R + 1e-11, normalised along the other axis), informativeness = mean held-out accuracy.
- SAP (Kumar et al. 2018), discrete variant: per (code i, factor j) the held-out accuracy of a
  ``LinearSVC(C=0.01, class_weight="balanced")`` on code i alone; mean over factors of the top-two gap.
- FactorVAE score (Kim & Mnih 2018): a vote is a batch of 64 codes sharing one factor's value; the code
  dimension of least variance relative to its global variance (dimensions with global std < 0.05 pruned)
  votes for that factor; the majority-vote classifier from 10,000 training votes is scored on 5,000 more.
  On arrays the batch is drawn, with replacement, from the given codes whose factor has that value
  (``factor_vae_score``).
- TAD (Yeats et al. 2022, as InfoDiffusion evaluates it): AUROC of every axis against every binary
  attribute (max over the axis and its negation); an attribute counts when its best AUROC is >= 0.75 and
  no other attribute explains more than 20% of its entropy; TAD is the sum over counted attributes of the
  best minus the second-best AUROC, ``tad_attributes`` their number.

Earlier variants of this project stay under explicit names: ``mig_binned`` and ``modularity_binned``
(factors binned like the codes), ``dci_random_forest`` (random-forest regressors on factor values, R^2 as
informativeness, unweighted completeness) and ``sap_continuous`` (squared correlations, no split).
Predictability: k-NN / linear R^2, fitted on one set and scored on held-out codes.
Every randomised estimator takes a seed.
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


def mig_binned(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> float:
    """MIG with factors binned like the codes (this project's variant before the disentanglement_lib default)."""
    m = mi_matrix(codes, factors, bins)  # (D, K)
    f = discretise(factors, bins)
    H = np.array([_mi(f[:, j], f[:, j]) for j in range(f.shape[1])])
    top = np.sort(m, axis=0)[::-1]
    gap = top[0] - (top[1] if m.shape[0] > 1 else 0.0)
    return float(np.mean(gap / H))


def modularity_binned(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> float:
    """Modularity with factors binned like the codes; a code with no information scores 1 (earlier variant)."""
    m = mi_matrix(codes, factors, bins)  # (D, K)
    K = m.shape[1]
    theta = m.max(1)
    ideal = np.zeros_like(m)
    ideal[np.arange(len(m)), m.argmax(1)] = theta
    delta = ((m - ideal) ** 2).sum(1) / (theta**2 * (K - 1) + 1e-12)
    return float(np.mean(1 - delta))


def sap_continuous(codes: np.ndarray, factors: np.ndarray) -> float:
    """SAP's continuous variant on one set, no train/test split (earlier variant). Per (code, factor): R^2 of a linear fit of the factor on that single code (= squared correlation)."""
    c = (codes - codes.mean(0)) / (codes.std(0) + 1e-12)
    f = (factors - factors.mean(0)) / (factors.std(0) + 1e-12)
    S = (c.T @ f / len(c)) ** 2  # (D, K)
    top = np.sort(S, axis=0)[::-1]
    return float(np.mean(top[0] - (top[1] if S.shape[0] > 1 else 0.0)))


def importance_matrix_rf(codes_fit, factors_fit, codes_test, factors_test, seed: int = 0):
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


def dci_random_forest(codes_fit, factors_fit, codes_test, factors_test, seed: int = 0) -> dict:
    """DCI from random-forest regressors on factor values, unweighted completeness, R^2 as informativeness
    (earlier variant)."""
    R, info = importance_matrix_rf(codes_fit, factors_fit, codes_test, factors_test, seed)
    D, K = R.shape
    dis_i = 1 - _entropy_norm(R, K) if K > 1 else np.ones(D)
    rho = R.sum(1) / R.sum()
    comp_j = 1 - _entropy_norm(R.T, D) if D > 1 else np.ones(K)
    return {"disentanglement": float((rho * dis_i).sum()), "completeness": float(comp_j.mean()),
            "informativeness": info, "importance": R.tolist()}


# ------------------------------------------------------------------------ disentanglement_lib conventions
def histogram_discretize(x: np.ndarray, bins: int = 20) -> np.ndarray:
    """[N, D] -> integer bins per column: np.digitize on the left edges of np.histogram's ``bins`` bins."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        out[:, j] = np.digitize(x[:, j], np.histogram(x[:, j], bins)[1][:-1])
    return out


def factor_classes(factors: np.ndarray, bins: int = 20) -> np.ndarray:
    """Factors as integer classes: integer-valued columns keep their values, others get 20 equal-width bins."""
    f = np.asarray(factors)
    out = np.zeros(f.shape, dtype=np.int64)
    for j in range(f.shape[1]):
        col = f[:, j]
        if np.issubdtype(col.dtype, np.integer) or np.array_equal(col, np.round(col)):
            out[:, j] = np.unique(col, return_inverse=True)[1].reshape(-1)
        else:
            out[:, j] = histogram_discretize(col[:, None], bins)[:, 0]
    return out


def _mi_score(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import mutual_info_score

    return float(mutual_info_score(a, b))


def mutual_info(codes: np.ndarray, classes: np.ndarray, bins: int = 20) -> np.ndarray:
    """[D, K]: MI (nats) between each binned code and each factor class."""
    c = histogram_discretize(codes, bins)
    return np.array([[_mi_score(classes[:, j], c[:, i]) for j in range(classes.shape[1])] for i in range(c.shape[1])])


def mig(codes: np.ndarray, classes: np.ndarray, bins: int = 20) -> float:
    m = mutual_info(codes, classes, bins)
    H = np.array([_mi_score(classes[:, j], classes[:, j]) for j in range(classes.shape[1])])
    top = np.sort(m, axis=0)[::-1]
    gap = top[0] - (top[1] if len(top) > 1 else 0.0)
    return float(np.mean(gap / H))


def modularity(codes: np.ndarray, classes: np.ndarray, bins: int = 20) -> float:
    sq = mutual_info(codes, classes, bins) ** 2
    mx = sq.max(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (sq.sum(1) - mx) / (mx * (sq.shape[1] - 1))
    score[mx == 0] = 0.0
    return float(np.mean(score))


def _entropy_along_rows(p: np.ndarray, base: int) -> np.ndarray:
    """scipy.stats.entropy of each row of p + 1e-11 (normalised), in units of log(base)."""
    p = p + 1e-11
    p = p / p.sum(1, keepdims=True)
    return -(p * np.log(p)).sum(1) / np.log(base)


def dci(codes_train, classes_train, codes_test, classes_test, seed: int = 0) -> dict:
    from sklearn.ensemble import GradientBoostingClassifier

    D, K = codes_train.shape[1], classes_train.shape[1]
    R = np.zeros((D, K))
    acc_train, acc_test = [], []
    for j in range(K):
        m = GradientBoostingClassifier(random_state=seed).fit(codes_train, classes_train[:, j])
        R[:, j] = np.abs(m.feature_importances_)
        acc_train.append(float(np.mean(m.predict(codes_train) == classes_train[:, j])))
        acc_test.append(float(np.mean(m.predict(codes_test) == classes_test[:, j])))
    W = R if R.sum() > 0 else np.ones_like(R)
    dis = float(np.sum((1 - _entropy_along_rows(R, K)) * W.sum(1) / W.sum())) if K > 1 else 1.0
    com = float(np.sum((1 - _entropy_along_rows(R.T, D)) * W.sum(0) / W.sum())) if D > 1 else 1.0
    return {"disentanglement": dis, "completeness": com, "informativeness": float(np.mean(acc_test)),
            "informativeness_train": float(np.mean(acc_train)), "informativeness_per_factor": acc_test,
            "importance": R.tolist()}


def sap(codes_train, classes_train, codes_test, classes_test, seed: int = 0) -> float:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    D, K = codes_train.shape[1], classes_train.shape[1]
    S = np.zeros((D, K))
    for i in range(D):
        for j in range(K):
            with warnings.catch_warnings():  # liblinear's iteration cap, as in disentanglement_lib
                warnings.simplefilter("ignore", ConvergenceWarning)
                m = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
                m.fit(codes_train[:, i : i + 1], classes_train[:, j])
            S[i, j] = np.mean(m.predict(codes_test[:, i : i + 1]) == classes_test[:, j])
    top = np.sort(S, axis=0)
    return float(np.mean(top[-1] - (top[-2] if D > 1 else 0.0)))


def _factor_vae_votes(codes, classes, n_votes, batch, global_var, active, rng) -> np.ndarray:
    N, K = classes.shape
    votes = np.zeros((K, codes.shape[1]))
    groups = [{v: np.flatnonzero(classes[:, k] == v) for v in np.unique(classes[:, k])} for k in range(K)]
    for _ in range(n_votes):
        k = rng.integers(K)
        members = groups[k][classes[rng.integers(N), k]]
        if len(members) < 2:  # a value seen once has no variance to measure
            continue
        pick = rng.choice(members, size=batch, replace=True)
        local = codes[pick].var(0, ddof=1)
        votes[k, np.argmin(local[active] / global_var[active])] += 1
    return votes


def factor_vae_score(codes_train, classes_train, codes_test=None, classes_test=None, seed: int = 0,
                     batch: int = 64, n_train: int = 10_000, n_eval: int = 5_000, threshold: float = 0.05) -> dict:
    """FactorVAE score on arrays. A vote fixes factor k (uniform) at the value of a random code's factor k
    (so values come with their frequency) and takes ``batch`` codes with that value, drawn with replacement
    from the given set: on a full factor grid (every combination once) this is exactly disentanglement_lib's
    draw, which fixes one factor and samples the others uniformly and independently. Global variances (ddof 1) from the
    train set; dimensions with std < ``threshold`` pruned; the vote's index counts among the active
    dimensions, as in disentanglement_lib. Votes from the test set (default: the train set) score it."""
    rng = np.random.default_rng(seed)
    codes_train = np.asarray(codes_train, dtype=np.float64)
    global_var = codes_train.var(0, ddof=1)
    active = np.sqrt(global_var) >= threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "active_dims": 0}
    tv = _factor_vae_votes(codes_train, classes_train, n_train, batch, global_var, active, rng)
    clf = np.argmax(tv, axis=0)
    cols = np.arange(tv.shape[1])
    if codes_test is None:
        codes_test, classes_test = codes_train, classes_train
    ev = _factor_vae_votes(np.asarray(codes_test, np.float64), classes_test, n_eval, batch, global_var, active, rng)
    return {"train_accuracy": float(tv[clf, cols].sum() / tv.sum()), "eval_accuracy": float(ev[clf, cols].sum() / ev.sum()),
            "active_dims": int(active.sum())}


def _binary_mi(a: np.ndarray, b: np.ndarray) -> float:
    """MI (nats) of two 0/1 arrays; 0 log 0 = 0."""
    total = 0.0
    for u in (0, 1):
        for v in (0, 1):
            pj = np.mean((a == u) & (b == v))
            pu, pv = np.mean(a == u), np.mean(b == v)
            if pj > 0 and pu > 0 and pv > 0:
                total += pj * np.log(pj / (pu * pv))
    return float(total)


def tad(codes: np.ndarray, attributes: np.ndarray, min_auroc: float = 0.75, max_entropy_share: float = 0.2) -> dict:
    """TAD and the captured attributes. An attribute with a single value (no entropy) is never counted."""
    from sklearn.metrics import roc_auc_score

    codes, attributes = np.asarray(codes, np.float64), np.asarray(attributes).astype(np.int64)
    A, D = attributes.shape[1], codes.shape[1]
    auroc = np.full((A, D), 0.5)
    for a in range(A):
        if len(np.unique(attributes[:, a])) < 2:
            continue
        for d in range(D):
            s = roc_auc_score(attributes[:, a], codes[:, d])
            auroc[a, d] = max(s, 1 - s)
    mi = np.array([[_binary_mi(attributes[:, i], attributes[:, j]) for j in range(A)] for i in range(A)])
    H = np.diag(mi).copy()
    off = mi * (1 - np.eye(A))
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(H > 0, off.max(1) / np.where(H > 0, H, 1), np.inf) if A > 1 else np.where(H > 0, 0.0, np.inf)
    top = np.sort(auroc, axis=1)[:, ::-1]
    gap = top[:, 0] - (top[:, 1] if D > 1 else 0.5)
    keep = (top[:, 0] >= min_auroc) & (share <= max_entropy_share)
    return {"tad": float(gap[keep].sum()), "tad_attributes": int(keep.sum()), "captured": np.flatnonzero(keep).tolist(),
            "auroc": auroc.tolist(), "best_axis": auroc.argmax(1).tolist()}


def disentanglement_metrics(codes_train, factors_train, codes_test, factors_test, attributes=None,
                            seed: int = 0, bins: int = 20) -> dict:
    """Every metric with disentanglement_lib's conventions, under the keys ``evaluate.py --metrics`` writes.
    Factors are classes (``factor_classes`` bins continuous ones); MIG and Modularity on the train set.
    ``attributes`` [N_test, A] (0/1) belong to the test codes and add TAD."""
    codes_train, codes_test = np.asarray(codes_train, np.float64), np.asarray(codes_test, np.float64)
    both = factor_classes(np.r_[np.asarray(factors_train), np.asarray(factors_test)], bins)
    y_train, y_test = both[: len(codes_train)], both[len(codes_train) :]
    d = dci(codes_train, y_train, codes_test, y_test, seed)
    fv = factor_vae_score(codes_train, y_train, codes_test, y_test, seed)
    out = {"mig": mig(codes_train, y_train, bins), "dci_disentanglement": d["disentanglement"],
           "dci_completeness": d["completeness"], "dci_informativeness": d["informativeness"],
           "sap": sap(codes_train, y_train, codes_test, y_test, seed), "modularity": modularity(codes_train, y_train, bins),
           "factor_vae": fv["eval_accuracy"]}
    if attributes is not None:
        t = tad(codes_test, attributes)
        out.update(tad=t["tad"], tad_attributes=t["tad_attributes"])
    return out


def all_metrics(codes_fit, factors_fit, codes_test, factors_test, names, seed: int = 0) -> dict:
    """The run evaluation's factor metrics: R^2 (k-NN, linear, and per single axis), disentanglement_lib's
    metrics (``disentanglement_metrics``: the regressors' fitting set is its train set) and the earlier
    variants under ``legacy``."""
    knn = knn_r2(codes_fit, factors_fit, codes_test, factors_test)
    lin = linear_r2(codes_fit, factors_fit, codes_test, factors_test)
    return {
        "knn_r2": dict(zip(names, knn)),
        "linear_r2": dict(zip(names, lin)),
        "axis_r2": axis_r2(codes_test, factors_test).tolist(),
        **disentanglement_metrics(codes_fit, factors_fit, codes_test, factors_test, seed=seed),
        "legacy": {"mig_binned": mig_binned(codes_test, factors_test),
                   "dci_random_forest": dci_random_forest(codes_fit, factors_fit, codes_test, factors_test, seed),
                   "modularity_binned": modularity_binned(codes_test, factors_test),
                   "sap_continuous": sap_continuous(codes_test, factors_test)},
    }


def axis_r2(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """[D, K]: R^2 of the least-squares line of factor k on axis d alone (the squared correlation)."""
    c = (codes - codes.mean(0)) / (codes.std(0) + 1e-12)
    f = (factors - factors.mean(0)) / (factors.std(0) + 1e-12)
    return (c.T @ f / len(c)) ** 2

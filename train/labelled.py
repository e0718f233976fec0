"""Analyses of a model on labelled natural images (Fashion-MNIST's 10 classes as one-vs-rest attributes,
CelebA's 40 attributes): linear probes and the participation ratio of their weights.

The participation ratio of an attribute's probe weights w over D axes (on codes standardised per axis, so
that an axis's scale does not weigh) is sqrt((sum w_d^2)^2 / sum w_d^4): the square root of the usual
participation ratio, 1 when one axis decides and sqrt(D) when all D axes weigh the same.
"""

from __future__ import annotations

import warnings

import numpy as np

from train.metrics import _standardise

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def one_vs_rest(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Class labels [N] -> 0/1 attributes [N, n_classes]."""
    labels = np.asarray(labels, np.int64)
    return (labels[:, None] == np.arange(n_classes)[None, :]).astype(np.int64)


def participation_ratio(w: np.ndarray) -> np.ndarray:
    """Per row of w [A, D]: sqrt((sum w^2)^2 / sum w^4), 1 when one axis carries all the weight and sqrt(D)
    when all D axes carry the same."""
    w2 = np.asarray(w, np.float64) ** 2
    return np.sqrt(w2.sum(1) ** 2 / np.maximum((w2**2).sum(1), 1e-300))


PROBE_CS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)  # the grid of inverse regularisation strengths for ``cv=True``


def linear_probe(codes_fit, labels_fit, codes_test, labels_test, seed: int = 0, cv: bool = False) -> dict:
    """Multinomial logistic regression on standardised codes: test accuracy. ``cv``: the inverse
    regularisation strength C chosen from ``PROBE_CS`` by 3-fold cross-validation on the fit set (the scaler
    refitted in each fold), as an independent probe does; otherwise C = 1 (scikit-learn's default, which
    under-regularises a wide input such as raw pixels)."""
    from sklearn.linear_model import LogisticRegression

    if cv:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import GridSearchCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
        with warnings.catch_warnings():  # a weakly regularised fit on raw pixels stops at max_iter unconverged
            warnings.simplefilter("ignore", ConvergenceWarning)
            g = GridSearchCV(pipe, {"logisticregression__C": list(PROBE_CS)}, cv=3).fit(
                np.asarray(codes_fit, np.float64), labels_fit)
        acc = float((g.predict(np.asarray(codes_test, np.float64)) == np.asarray(labels_test)).mean())
        return {"accuracy": acc, "C": float(g.best_params_["logisticregression__C"])}
    a, b = _standardise(np.asarray(codes_fit, np.float64), np.asarray(codes_test, np.float64))
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(a, labels_fit)
    return {"accuracy": float((clf.predict(b) == np.asarray(labels_test)).mean()), "C": 1.0}


def attribute_probes(codes_fit, attrs_fit, codes_test, attrs_test, seed: int = 0) -> dict:
    """One-vs-rest logistic regression per attribute on standardised codes: balanced test accuracy, the
    weights and their participation ratio (``participation_ratio``)."""
    from sklearn.linear_model import LogisticRegression

    a, b = _standardise(np.asarray(codes_fit, np.float64), np.asarray(codes_test, np.float64))
    attrs_fit, attrs_test = np.asarray(attrs_fit), np.asarray(attrs_test)
    W, acc = np.zeros((attrs_fit.shape[1], a.shape[1])), []
    for k in range(attrs_fit.shape[1]):
        if len(np.unique(attrs_fit[:, k])) < 2:
            acc.append(float("nan"))
            continue
        clf = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed).fit(a, attrs_fit[:, k])
        W[k] = clf.coef_[0]
        p, y = clf.predict(b), attrs_test[:, k]
        acc.append(float(np.mean([(p[y == v] == v).mean() for v in (0, 1) if (y == v).any()])))
    return {"balanced_accuracy": acc, "weights": W.tolist(), "participation_ratio": participation_ratio(W).tolist()}

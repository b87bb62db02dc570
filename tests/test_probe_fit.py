"""The probe's logistic regression (scikit-learn): the fit is the minimiser of the documented
objective, sum(log loss) + l2/2 * |w|^2 on standardised features with a free bias."""

from __future__ import annotations

import numpy as np
import pytest

from leanthink.probes import auc, fit_logreg


def _objective_gradient(X, y, w, b, mean, std, l2):
    Z = (X - mean) / std
    p = 1 / (1 + np.exp(-(Z @ w + b)))
    return Z.T @ (p - y) + l2 * w, float(np.sum(p - y))


@pytest.mark.parametrize("n,d,l2", [(60, 5, 1.0), (40, 30, 0.3)])
def test_fit_is_the_minimiser_of_the_l2_objective(n, d, l2):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + 2.0
    y = (X[:, 0] + rng.normal(size=n) > 2.0).astype(float)
    w, b, mean, std, single = fit_logreg(X, y, l2)
    assert not single and w.shape == (d,)
    np.testing.assert_allclose(mean, X.mean(axis=0))
    gw, gb = _objective_gradient(X, y, w, b, mean, std, l2)
    assert np.max(np.abs(gw)) < 1e-5 and abs(gb) < 1e-5  # stationary: the bias is not penalised
    assert w[0] > 0.5  # the informative feature carries the weight


def test_one_class_gives_a_constant_probe_at_the_smoothed_base_rate():
    X = np.arange(12, dtype=float).reshape(4, 3)
    w, b, _, std, single = fit_logreg(X, np.ones(4))
    assert single and not w.any() and b == pytest.approx(np.log(5 / 6 / (1 / 6)))
    _, _, _, std, _ = fit_logreg(np.ones((3, 2)), np.zeros(3))
    assert (std == 1.0).all()  # a constant feature is not divided by zero


def test_auc_counts_ties_half_and_is_undefined_with_one_class():
    assert auc([0.9, 0.1, 0.5, 0.5], [1, 0, 1, 0]) == pytest.approx(0.875)
    assert auc([0.3, 0.2], [1, 1]) is None

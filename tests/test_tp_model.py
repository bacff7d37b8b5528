"""The closed-form TP(N) against exact rational arithmetic and a draw-by-draw Monte Carlo."""
import math
from fractions import Fraction as F

import numpy as np
import pytest

from judgeflow.oracle.tp import model


def exact(n, a, b, p0, p1):
    """(P(N=n, X=1), P(N=n, X=0), P(N>n)) by another route: q = (1-p0) + p (p0-p1) expanded in the
    monomials p^i, with the Beta moments E[p^k] = prod_{i<k} (a+i)/(a+b+i) (rational for integer a, b)."""
    p0, p1 = F(p0), F(p1)

    def moment(k):
        out = F(1)
        for i in range(k):
            out *= F(a + i, a + b + i)
        return out

    def poly_pow(m):  # coefficients of q^m in p
        c = [F(1)]
        for _ in range(m):
            nxt = [F(0)] * (len(c) + 1)
            for i, v in enumerate(c):
                nxt[i] += v * (1 - p0)
                nxt[i + 1] += v * (p0 - p1)
            c = nxt
        return c

    def expect(coeffs):
        return sum(v * moment(i) for i, v in enumerate(coeffs))

    q = poly_pow(n - 1)
    times_p = [F(0)] + q                                    # q^{n-1} p
    times_1mp = [v - (q[i - 1] if i else 0) for i, v in enumerate(q + [F(0)])]  # q^{n-1} (1-p)
    return p1 * expect(times_p), p0 * expect(times_1mp), expect(poly_pow(n))


@pytest.mark.parametrize("a,b,p0,p1", [(2, 1, F(1, 5), F(9, 10)), (1, 3, F(1, 10), F(7, 10)),
                                       (5, 2, F(2, 5), F(3, 5)), (1, 1, F(0), F(1, 2))])
def test_closed_form_matches_exact_rationals(a, b, p0, p1):
    for n in range(1, 9):
        j1, j0, none = exact(n, a, b, p0, p1)
        assert model.tp(n, a, b, float(p0), float(p1)) == pytest.approx(float(j1 / (j1 + j0)), rel=1e-12)
        assert model.p_first_accept(n, a, b, float(p0), float(p1)) == pytest.approx(float(j1 + j0), rel=1e-11)
        assert model.p_accept_within(n, a, b, float(p0), float(p1)) == pytest.approx(float(1 - none), rel=1e-11)
    x1, x0, nn = model.log_tables(8, a, b, float(p0), float(p1))
    for n in range(1, 9):
        j1, j0, none = exact(n, a, b, p0, p1)
        assert math.exp(x1[n - 1]) == pytest.approx(float(j1), rel=1e-11)
        assert math.exp(x0[n - 1]) == pytest.approx(float(j0), rel=1e-11)
        assert math.exp(nn[n - 1]) == pytest.approx(float(none), rel=1e-11)


def test_closed_form_matches_draw_by_draw_monte_carlo():
    a, b, p0, p1, n_max, Q = 1.5, 1.2, 0.25, 0.85, 6, 300_000
    rng = np.random.default_rng(7)
    p = rng.beta(a, b, Q)
    x = rng.random((Q, n_max)) < p[:, None]                       # draw i's true label
    y = rng.random((Q, n_max)) < np.where(x, p1, p0)              # the judge's verdict on it
    accepted = y.any(axis=1)
    first = np.where(accepted, y.argmax(axis=1) + 1, 0)
    x_first = x[np.arange(Q), np.maximum(first - 1, 0)]
    for n in range(1, n_max + 1):
        at_n = first == n
        m = at_n.sum()
        tp_mc = x_first[at_n].mean()
        se = math.sqrt(tp_mc * (1 - tp_mc) / m)
        assert abs(model.tp(n, a, b, p0, p1) - tp_mc) < 4 * se + 1e-3, n
        pf = model.p_first_accept(n, a, b, p0, p1)
        assert abs(pf - m / Q) < 4 * math.sqrt(pf * (1 - pf) / Q)
    pw = model.p_accept_within(n_max, a, b, p0, p1)
    assert abs(pw - accepted.mean()) < 4 * math.sqrt(pw * (1 - pw) / Q)


def test_stable_for_large_n_and_consistent():
    curve = model.tp_curve(400, a=2.0, b=1.0, p0=0.2, p1=0.9)
    assert all(0.0 <= v <= 1.0 for v in curve)
    assert all(x >= y for x, y in zip(curve, curve[1:]))          # falls with N for p1 > p0 here
    total = sum(model.p_first_accept(n, 2.0, 1.0, 0.2, 0.9) for n in range(1, 31))
    assert total == pytest.approx(model.p_accept_within(30, 2.0, 1.0, 0.2, 0.9), rel=1e-12)
    # a perfect judge: every accept is a true positive
    assert model.tp_curve(5, a=1, b=1, p0=0.0, p1=0.7) == [1.0] * 5
    # nothing is ever accepted: TP undefined
    assert all(math.isnan(v) for v in model.tp_curve(3, a=1, b=1, p0=0.0, p1=0.0))


@pytest.mark.parametrize("kw,name", [({"a": 0}, "a"), ({"b": -1}, "b"), ({"a": float("nan")}, "a"),
                                     ({"p0": 1.5}, "p0"), ({"p1": -0.1}, "p1")])
def test_bad_parameters_name_the_parameter(kw, name):
    args = {"a": 2.0, "b": 1.0, "p0": 0.2, "p1": 0.9, **kw}
    with pytest.raises(ValueError, match=rf"^{name} must"):
        model.tp_curve(3, **args)


def test_bad_n():
    with pytest.raises(ValueError, match="n_max"):
        model.tp_curve(0, a=1, b=1, p0=0.1, p1=0.9)
    with pytest.raises(ValueError, match=r"^n must"):
        model.tp(0, 1, 1, 0.1, 0.9)

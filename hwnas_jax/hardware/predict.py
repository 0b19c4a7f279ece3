"""Least-squares cost model for the HW-NAS-Bench values a table lacks.

For one (dataset, metric) column of a table, the model is fitted on the known entries only:

    y(g) ~ b + sum_e w[e, g_e]                                (additive: per-edge op terms)
    y(g) ~ b + sum_e w[e, g_e] + sum_{e<f} v[e, f, g_e, g_f]  (pairwise: plus edge-pair terms)

with w[e, none] = v[e, f, none, .] = v[e, f, ., none] = 0 (treatment coding: a full-rank
design of 25 or 265 indicator features), solved by least squares (normal equations). The
pairwise model is used only where it clearly helps: its 5-fold held-out MAE must be below 90 %
of the additive model's. Predictions are clipped to the range of the known values, so a
prediction is never zero or negative. On the CIFAR-10 table the simulated devices (eyeriss,
fpga) are exactly additive (held-out error ~1e-13); measured ones (edgegpu, edgetpu) are noisy
and need the pairwise terms.

The held-out error of the chosen model (5 folds over the known entries, fixed seed) is kept on
the fitted :class:`OpPredictor` and logged once, when a predictor is first fitted. It measures
interpolation among architectures like the known ones. The missing values are not a random
sample (edgetpu's failed measurements concentrate on architectures with ``none`` edges), but on
the CIFAR-10 table reweighting the held-out errors to the missing entries' number of ``none``
edges changes little (edgetpu latency: 4.1 % mean relative error instead of 3.2 %; edgegpu:
7.6 % instead of 6.7 %).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading

import numpy as np
from absl import logging

from hwnas_jax.errors import UserError
from hwnas_jax.hardware import tables

NUM_EDGES = tables.NUM_EDGES
NUM_OPS = tables.NUM_OPS
FOLDS = 5
SEED = 0
PAIRWISE_GAIN = 0.9  # pairwise must reach < 90 % of the additive held-out MAE
MIN_KNOWN = {'additive': 100, 'pairwise': 2000}
_PAIRS = tuple(itertools.combinations(range(NUM_EDGES), 2))
_LEVELS = NUM_OPS - 1  # Treatment coding: op 0 (none) is each edge's reference level.
_NUM_FEATURES = {
    'additive': 1 + NUM_EDGES * _LEVELS,
    'pairwise': 1 + NUM_EDGES * _LEVELS + len(_PAIRS) * _LEVELS**2,
}


@dataclasses.dataclass(frozen=True)
class HeldOutError:
    """K-fold held-out error of a model over the known entries of a column.

    Attributes:
      folds: number of folds.
      n: number of known entries (each is held out once).
      mae: mean absolute error, in the column's unit.
      rmse: root mean squared error, in the column's unit.
      max_abs: largest absolute error, in the column's unit.
      mean_rel: mean of |error| / value (a fraction, 0.05 = 5 %).
      median_rel: median of |error| / value.
    """

    folds: int
    n: int
    mae: float
    rmse: float
    max_abs: float
    mean_rel: float
    median_rel: float


@dataclasses.dataclass(frozen=True, eq=False)
class OpPredictor:
    """A fitted cost model for one (dataset, metric) column.

    Attributes:
      dataset: the table dataset.
      metric: the HW-NAS-Bench metric, e.g. ``"edgegpu_latency"``.
      unit: its unit.
      kind: ``"additive"`` or ``"pairwise"``.
      weights: float64 ``[num_features]``, the least-squares solution.
      lo: smallest known value (predictions are clipped to ``[lo, hi]``).
      hi: largest known value.
      n_known: number of known entries it was fitted on.
      error: held-out error of this model.
      candidates: held-out error of every model kind that was tried.
    """

    dataset: str
    metric: str
    unit: str
    kind: str
    weights: np.ndarray
    lo: float
    hi: float
    n_known: int
    error: HeldOutError
    candidates: dict[str, HeldOutError]

    def predict(self, genomes: np.ndarray) -> np.ndarray:
        """Predicted values ``[P]`` for genomes ``[P, 6]``."""
        return np.clip(
            _predict(active_features(genomes, self.kind), self.weights), self.lo, self.hi
        )

    def summary(self) -> str:
        """One line: the model and its held-out error."""
        e = self.error
        return (
            f'{self.metric} on {self.dataset}: {self.kind} least-squares model on '
            f'{self.n_known} known entries; {e.folds}-fold held-out MAE {e.mae:.4g} {self.unit} '
            f'(RMSE {e.rmse:.4g}, max {e.max_abs:.4g}), mean relative error '
            f'{100 * e.mean_rel:.2f} % (median {100 * e.median_rel:.2f} %)'
        )


def active_features(genomes: np.ndarray, kind: str) -> np.ndarray:
    """Column indices of the ones of the design matrix; index F marks "no feature".

    Treatment coding, so that the design has full rank: an intercept, then per edge one
    indicator per op other than ``none`` (6 x 4), then for the pairwise model per edge pair one
    indicator per pair of ops other than ``none`` (15 x 16). The span is the same as that of the
    full one-hot (and of every op pair's one-hot), so the fit is the same least-squares fit.

    Args:
      genomes: ``[P, 6]`` ints in 0..4.
      kind: ``"additive"`` (F = 25) or ``"pairwise"`` (F = 265).

    Returns:
      int64 ``[P, 7]`` (additive) or ``[P, 22]`` (pairwise), entries in 0..F.
    """
    if kind not in _NUM_FEATURES:
        raise ValueError(f"unknown model kind {kind!r}; expected 'additive' or 'pairwise'")
    g = np.asarray(genomes, dtype=np.int64).reshape(-1, NUM_EDGES)
    unused = _NUM_FEATURES[kind]
    cols = [
        np.zeros((g.shape[0], 1), np.int64),
        np.where(g > 0, np.arange(NUM_EDGES) * _LEVELS + g, unused),
    ]
    if kind == 'pairwise':
        base = 1 + NUM_EDGES * _LEVELS + np.arange(len(_PAIRS)) * _LEVELS**2
        a = g[:, [e for e, _ in _PAIRS]]
        b = g[:, [f for _, f in _PAIRS]]
        cols.append(np.where((a > 0) & (b > 0), base + (a - 1) * _LEVELS + (b - 1), unused))
    return np.concatenate(cols, axis=1)


def features(genomes: np.ndarray, kind: str) -> np.ndarray:
    """The dense design matrix, float64 ``[P, F]`` (see :func:`active_features`)."""
    idx = active_features(genomes, kind)
    x = np.zeros((idx.shape[0], _NUM_FEATURES[kind] + 1))
    np.put_along_axis(x, idx, 1.0, axis=1)
    return x[:, :-1]


def _normal_equations(idx: np.ndarray, y: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """X^T X and X^T y of the 0/1 design given by its active columns, by counting (no dense X).

    Index ``f`` ("no feature") is counted in an extra row and column, then dropped.
    """
    n = f + 1
    pairs = (idx[:, :, None] * n + idx[:, None, :]).ravel()
    gram = np.bincount(pairs, minlength=n * n).reshape(n, n)[:f, :f].astype(np.float64)
    moment = np.bincount(idx.ravel(), weights=np.repeat(y, idx.shape[1]), minlength=n)[:f]
    return gram, moment


def _solve(gram: np.ndarray, moment: np.ndarray) -> np.ndarray:
    """Least-squares weights from the normal equations.

    Cholesky where the design has full rank (the usual case: every op pair is observed);
    otherwise the minimum-norm solution from the Gram matrix's eigen-decomposition.
    """
    try:
        chol = np.linalg.cholesky(gram)
        if np.min(np.diag(chol)) > 1e-6 * np.sqrt(np.max(np.diag(gram))):
            return np.linalg.solve(chol.T, np.linalg.solve(chol, moment))
    except np.linalg.LinAlgError:
        pass
    evals, evecs = np.linalg.eigh(gram)
    keep = evals > 1e-10 * evals[-1]
    return evecs[:, keep] @ ((evecs[:, keep].T @ moment) / evals[keep])


def _predict(idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.append(weights, 0.0)[idx].sum(axis=1)  # Index F ("no feature") weighs 0.


def _held_out(idx: np.ndarray, y: np.ndarray, f: int, lo: float, hi: float) -> HeldOutError:
    """K-fold held-out error; fold normal equations are the total minus the held-out part."""
    perm = np.random.default_rng(SEED).permutation(len(y))
    gram, moment = _normal_equations(idx, y, f)
    err = np.empty_like(y)
    for fold in np.array_split(perm, FOLDS):
        g_out, m_out = _normal_equations(idx[fold], y[fold], f)
        w = _solve(gram - g_out, moment - m_out)
        err[fold] = np.clip(_predict(idx[fold], w), lo, hi) - y[fold]
    a = np.abs(err)
    return HeldOutError(
        folds=FOLDS,
        n=len(y),
        mae=float(a.mean()),
        rmse=float(np.sqrt(np.mean(err**2))),
        max_abs=float(a.max()),
        mean_rel=float(np.mean(a / y)),
        median_rel=float(np.median(a / y)),
    )


def fit(
    genomes: np.ndarray,
    values: np.ndarray,
    *,
    dataset: str = '',
    metric: str = '',
    kind: str | None = None,
) -> OpPredictor:
    """Fits the cost model on known entries and measures its held-out error.

    Args:
      genomes: ``[N, 6]`` genomes with known values.
      values: ``[N]`` their values (finite, positive).
      dataset: dataset name, for messages.
      metric: HW-NAS-Bench metric name, for messages and the unit.
      kind: ``"additive"``, ``"pairwise"``, or None to choose: pairwise where it has enough
        data and its held-out MAE is below ``PAIRWISE_GAIN`` times the additive one.

    Returns:
      The fitted :class:`OpPredictor`.

    Raises:
      UserError: too few known entries to fit (use another ``missing`` policy).
      ValueError: non-finite values or an unknown ``kind`` (a caller's bug).
    """
    y = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError('fit() takes known (finite) values only')
    if kind is not None and kind not in _NUM_FEATURES:
        raise ValueError(f'unknown model kind {kind!r}; expected one of {list(_NUM_FEATURES)}')
    kinds = [kind] if kind else [k for k in ('additive', 'pairwise') if len(y) >= MIN_KNOWN[k]]
    if not kinds or len(y) < MIN_KNOWN[kinds[0]]:
        need = MIN_KNOWN[kind or 'additive']
        raise UserError(
            f'cannot predict {metric} on {dataset}: only {len(y)} known values, the '
            f"{kind or 'additive'} model needs {need}; use missing='infeasible' or 'error'"
        )
    lo, hi = float(y.min()), float(y.max())
    designs = {k: active_features(genomes, k) for k in kinds}
    candidates = {k: _held_out(designs[k], y, _NUM_FEATURES[k], lo, hi) for k in kinds}
    chosen = kinds[0]
    if 'pairwise' in candidates and kind is None:
        add, pw = candidates['additive'].mae, candidates['pairwise'].mae
        if add > 1e-9 * float(np.mean(np.abs(y))) and pw < PAIRWISE_GAIN * add:
            chosen = 'pairwise'
    weights = _solve(*_normal_equations(designs[chosen], y, _NUM_FEATURES[chosen]))
    weights.setflags(write=False)
    return OpPredictor(
        dataset=dataset,
        metric=metric,
        unit=tables.TABLE_UNITS.get(metric, ''),
        kind=chosen,
        weights=weights,
        lo=lo,
        hi=hi,
        n_known=len(y),
        error=candidates[chosen],
        candidates=candidates,
    )


_CACHE: dict[tuple[str, str, str], OpPredictor] = {}
_LOCK = threading.Lock()


def predictor(table: tables.CostTable, dataset: str, metric: str) -> OpPredictor:
    """The fitted model for one column of ``table``: fitted once, cached by content digest.

    The first fit logs the model and its held-out error (absl logging, INFO).
    """
    key = (table.digest, dataset, metric)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    col = table.column(dataset, metric)
    known = ~np.isnan(col)
    model = fit(table.genomes[known], col[known], dataset=dataset, metric=metric)
    logging.info(
        'HW-NAS-Bench %s lacks %d of %d values; predicting them with %s',
        table.source,
        int((~known).sum()),
        len(col),
        model.summary(),
    )
    with _LOCK:
        _CACHE.setdefault(key, model)
        return _CACHE[key]

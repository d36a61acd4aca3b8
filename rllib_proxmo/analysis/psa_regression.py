"""PSA's baseline as a scikit-learn regressor, so that its similarity can be tuned without RL runs.

PSA (paper Eq. 9-11) estimates the return-to-go ``R_t`` of a step from the
returns of the steps of the same task group, weighted by
``softmax_j(cos_tfidf(s_i, s_j) / tau)``: a kernel (Nadaraya-Watson) regression
of step returns on state text. How well it predicts the returns of episodes it
has not seen measures its hyperparameters (``tau``, the TF-IDF options,
``psa_scope``) on logged rollouts, in minutes on a CPU instead of GPU-days of
RL.

Data
    ``X`` is a pandas DataFrame with one row per step and the columns of
    :mod:`rllib_proxmo.analysis.rollout_files`; the regressors read ``group_id``,
    ``episode_id``, ``t``, ``state`` and, when present, ``iteration`` (groups
    are ``(iteration, group_id)``; a missing ``iteration`` column means one
    iteration). ``pandas.DataFrame(load_rollouts(path))`` gives it. A DataFrame
    is what scikit-learn's splitters and searches index row-wise. ``y`` is the
    discounted return-to-go of each step, :func:`step_returns` computes it from
    the ``reward`` column. The discount defines the target rather than the
    model, so it is not a hyperparameter here: errors at different discounts
    are not comparable.

Prediction
    For a step i of ``X`` the candidates are the training steps of its group
    (``psa_scope="group"``) or of its group at the same t (``"same_step"``, the
    paper's Eq. 10). The prediction is ``sum_j w_ij y_j`` with
    ``w_ij = softmax_j(sim(s_i, s_j) / tau)``, computed by the training-time
    kernel of :mod:`rllib_proxmo.advantages.step_term` (:func:`fit_tfidf`,
    :func:`block_cosine`, :func:`block_soft_baseline`): identical texts have
    similarity exactly 1, a text without a known term 0 with every text.
    Training's baseline counts step i among its own candidates
    ("leave-one-in"); a held-out step is never among the training steps, so
    its prediction does not contain its own return. Predicting the training
    steps themselves gives training's baseline exactly (``soft_baseline`` with
    the same ``tau`` and scope), for states with at least one term.
    ``tau = inf`` gives uniform weights: the plain mean of the candidates.

Fallbacks (counted in :class:`PredictionReport`, logged by ``predict``)
    A step without candidates (its group has no training step at its t, or its
    group is not in the training data) gets the mean training return of its
    group, and failing that the global mean training return.

Cross-validation
    :func:`episode_folds` splits by episode, never inside one, so that returns
    of held-out episodes are predicted from the other episodes of their group;
    :func:`evaluate_folds` scores any of the regressors here on those folds by
    mean squared error. References: ``PSABaselineRegressor(tau=math.inf,
    psa_scope="group")`` is the group mean, and :class:`ExactMatchRegressor`
    GiGPO's grouping of identical state texts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.utils.validation import check_is_fitted

from rllib_proxmo.advantages import AdvantageConfig, check_scope, returns_to_go
from rllib_proxmo.advantages.batch import (
    as_finite_column,
    as_int_column,
    as_text_column,
    first_seen_codes,
    lookup_codes,
)
from rllib_proxmo.advantages.step_term import Similarity, block_cosine, block_soft_baseline, fit_tfidf

__all__ = [
    "FROM_CANDIDATES",
    "FROM_GLOBAL_MEAN",
    "FROM_GROUP_MEAN",
    "PAPER",
    "STEP_COLUMNS",
    "CrossValidation",
    "ExactMatchRegressor",
    "PSABaselineRegressor",
    "PredictionReport",
    "episode_folds",
    "evaluate_folds",
    "step_returns",
]

logger = logging.getLogger(__name__)

STEP_COLUMNS = ("group_id", "episode_id", "t", "state")
"""Columns of ``X`` every regressor here reads (plus ``iteration`` when present)."""

PAPER = AdvantageConfig()  # the paper's tau, psa_scope and gamma: the defaults here

FROM_CANDIDATES, FROM_GROUP_MEAN, FROM_GLOBAL_MEAN = 0, 1, 2
"""Values of :attr:`PredictionReport.source`: how a step's prediction was made."""


@dataclass(frozen=True)
class _Steps:
    """Validated step columns of ``X``: (n,) int64 arrays and n state strings."""

    iteration: np.ndarray
    group_id: np.ndarray
    episode_id: np.ndarray
    t: np.ndarray
    state: list[str]

    def group_keys(self) -> Iterable[tuple[int, int]]:
        return zip(self.iteration.tolist(), self.group_id.tolist())

    def episode_codes(self) -> np.ndarray:
        return first_seen_codes(zip(self.iteration.tolist(), self.episode_id.tolist()))[1]


def _read_steps(X) -> _Steps:
    """Check the step columns of ``X`` (a DataFrame or a mapping of columns)."""
    if not isinstance(X, pd.DataFrame):
        try:
            X = pd.DataFrame(X)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"X must be a pandas DataFrame of steps with columns {STEP_COLUMNS}, got {type(X).__name__}"
            ) from error
    missing = [name for name in STEP_COLUMNS if name not in X.columns]
    if missing:
        raise ValueError(f"X lacks the step column(s) {missing}; required: {list(STEP_COLUMNS)}")
    integers = {
        name: as_int_column(f"column {name!r} of X", X[name].to_numpy())
        if name in X.columns
        else np.zeros(len(X), dtype=np.int64)
        for name in ("iteration", "group_id", "episode_id", "t")
    }
    return _Steps(state=list(as_text_column("column 'state' of X", X["state"].tolist())), **integers)


def _read_targets(y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must hold one return per step of X, shape ({n},), got {y.shape}")
    return as_finite_column("y", y)


def step_returns(X, gamma: float = PAPER.gamma) -> np.ndarray:
    """Discounted return-to-go ``R_t = sum_{k>=t} gamma**(k-t) r_k`` of every row of ``X``.

    Args:
        X: steps as described in the module docstring, with a ``reward``
            column; every episode must be complete (steps 0..T-1).
        gamma: discount in [0, 1] (paper: 0.95). The target of the regression:
            mean squared errors are comparable only at equal ``gamma``.

    Returns:
        (n,) float64, in the rows' order.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    steps = _read_steps(X)
    if "reward" not in X:
        raise ValueError("X lacks the 'reward' column needed to compute returns-to-go")
    return returns_to_go(steps.episode_codes(), steps.t, np.asarray(X["reward"], dtype=np.float64), gamma)


def episode_folds(X, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds over whole episodes, balanced across task groups.

    scikit-learn's ``StratifiedGroupKFold`` with the episode as the group (no
    episode is ever split between training and held-out rows) and the task
    group as the class, so every fold holds out about ``1 / n_splits`` of the
    episodes of each task and keeps the rest as candidates for them.

    Returns:
        ``n_splits`` pairs ``(train_rows, test_rows)`` of row positions in ``X``.
    """
    steps = _read_steps(X)
    _, group_code = first_seen_codes(steps.group_keys())
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros((len(steps.t), 1)), group_code, groups=steps.episode_codes()))


@dataclass(frozen=True)
class PredictionReport:
    """Predictions for n steps and how each was made.

    Attributes:
        prediction: (n,) predicted returns.
        source: (n,) :data:`FROM_CANDIDATES`, :data:`FROM_GROUP_MEAN` or
            :data:`FROM_GLOBAL_MEAN`.
        num_candidates: (n,) training steps the prediction averaged over (0 for
            a fallback).
        effective_neighbours: (n,) ``1 / sum_j w_ij**2``, between 1 (all weight
            on one candidate) and ``num_candidates`` (uniform); 0 for a fallback.
    """

    prediction: np.ndarray
    source: np.ndarray
    num_candidates: np.ndarray
    effective_neighbours: np.ndarray

    @property
    def fallbacks(self) -> dict[str, int]:
        """Number of steps predicted by the group mean and by the global mean."""
        return {
            "group_mean": int(np.sum(self.source == FROM_GROUP_MEAN)),
            "global_mean": int(np.sum(self.source == FROM_GLOBAL_MEAN)),
        }


class _CandidateRegressor(RegressorMixin, BaseEstimator):
    """Predicts a step's return by a softmax-weighted mean over the training steps of its block.

    A subclass defines the blocks (:meth:`_block_keys`: steps in one block are
    each other's candidates), the similarities of held-out steps and
    candidates (:meth:`_similarity`) and the softmax temperature
    (:meth:`_temperature`).
    """

    def _block_keys(self, steps: _Steps) -> Iterable[Hashable]:
        raise NotImplementedError

    def _validate_hyperparameters(self) -> None:
        """Raise ``ValueError`` for a bad hyperparameter (none to check by default)."""

    def _prepare(self, steps: _Steps) -> None:
        """Fit whatever the similarities need on the training steps (nothing by default)."""

    def _similarity(self, steps: _Steps) -> Similarity:
        """Similarities of (held-out step numbers of ``steps``, training step numbers) blocks."""
        raise NotImplementedError

    def _temperature(self) -> float:
        return 1.0

    def fit(self, X, y):
        """Store the training steps and their returns ``y`` ((n,) floats); returns ``self``."""
        steps = _read_steps(X)
        y = _read_targets(y, len(steps.t))
        if not len(y):
            raise ValueError("cannot fit on zero steps")
        self._validate_hyperparameters()
        self._prepare(steps)
        self.block_codes_, self.train_block_ = first_seen_codes(self._block_keys(steps))
        self.group_codes_, train_group = first_seen_codes(steps.group_keys())
        self.group_mean_ = np.bincount(train_group, weights=y) / np.bincount(train_group)
        self.global_mean_ = float(y.mean())
        self.train_returns_ = y
        return self

    def predict(self, X) -> np.ndarray:
        """(n,) predicted returns of the steps of ``X``; fallbacks are logged at INFO level."""
        report = self.predict_report(X)
        fallbacks = report.fallbacks
        if any(fallbacks.values()):
            logger.info(
                "%s: %d of %d steps had no candidate; fallbacks used: %s",
                type(self).__name__,
                sum(fallbacks.values()),
                len(report.prediction),
                fallbacks,
            )
        return report.prediction

    def predict_report(self, X) -> PredictionReport:
        """Predictions of the steps of ``X`` with their sources and weight statistics."""
        check_is_fitted(self, "train_returns_")
        steps = _read_steps(X)
        test_block = lookup_codes(self.block_codes_, self._block_keys(steps))
        soft = block_soft_baseline(
            test_block, self.train_block_, self._similarity(steps), self.train_returns_, self._temperature()
        )
        has_candidates = soft.num_candidates > 0
        source = np.where(has_candidates, FROM_CANDIDATES, FROM_GROUP_MEAN).astype(np.int8)
        group = lookup_codes(self.group_codes_, steps.group_keys())
        source[~has_candidates & (group < 0)] = FROM_GLOBAL_MEAN
        prediction = soft.baseline.copy()
        prediction[source == FROM_GROUP_MEAN] = self.group_mean_[group[source == FROM_GROUP_MEAN]]
        prediction[source == FROM_GLOBAL_MEAN] = self.global_mean_
        return PredictionReport(prediction, source, soft.num_candidates, soft.effective_neighbours)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags


class PSABaselineRegressor(_CandidateRegressor):
    """PSA's proximity-weighted baseline (paper Eq. 9-11) as a regressor of step returns.

    Parameters:
        tau: softmax temperature, > 0 (paper: 0.1); ``math.inf`` gives uniform
            weights over the candidates.
        psa_scope: ``"same_step"`` (candidates share the group and t, Eq. 10) or
            ``"group"`` (all steps of the group).
        ngram_range, sublinear_tf, min_df, max_df, max_features: the
            ``TfidfVectorizer`` options of the state texts; the defaults are
            scikit-learn's, which the paper uses (the authors' release sets
            ``max_features=1024``).

    TF-IDF (:func:`~rllib_proxmo.advantages.step_term.fit_tfidf`) is fitted on
    the training states; held-out texts are embedded with its vocabulary and idf.

    Fitted attributes: ``tfidf_`` (the :class:`~rllib_proxmo.advantages.step_term.TfidfModel`);
    ``text_index_`` (distinct training text -> row of ``text_features_``),
    ``text_features_`` (their TF-IDF rows), ``train_text_`` ((m,) row of each
    training step); ``block_codes_`` and ``train_block_`` (candidate blocks),
    ``group_codes_``, ``group_mean_`` and ``global_mean_`` (the fallbacks),
    ``train_returns_`` ((m,) ``y``).
    """

    def __init__(
        self,
        tau: float = PAPER.tau,
        psa_scope: str = PAPER.psa_scope,
        ngram_range: tuple[int, int] = (1, 1),
        sublinear_tf: bool = False,
        min_df: float | int = 1,
        max_df: float | int = 1.0,
        max_features: int | None = None,
    ):
        self.tau = tau
        self.psa_scope = psa_scope
        self.ngram_range = ngram_range
        self.sublinear_tf = sublinear_tf
        self.min_df = min_df
        self.max_df = max_df
        self.max_features = max_features

    def _validate_hyperparameters(self) -> None:
        tau = self.tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float, np.number)) or math.isnan(tau) or tau <= 0:
            raise ValueError(f"tau must be a number > 0 (math.inf for uniform weights), got {tau!r}")
        check_scope(self.psa_scope)

    def _block_keys(self, steps: _Steps) -> Iterable[Hashable]:
        if self.psa_scope == "same_step":
            return zip(steps.iteration.tolist(), steps.group_id.tolist(), steps.t.tolist())
        return steps.group_keys()

    def _prepare(self, steps: _Steps) -> None:
        self.tfidf_, self.text_features_, self.train_text_ = fit_tfidf(
            steps.state,
            ngram_range=tuple(self.ngram_range),
            sublinear_tf=self.sublinear_tf,
            min_df=self.min_df,
            max_df=self.max_df,
            max_features=self.max_features,
        )
        self.text_index_ = dict(zip(steps.state, self.train_text_.tolist()))

    def _temperature(self) -> float:
        return self.tau

    def _similarity(self, steps: _Steps) -> Similarity:
        """TF-IDF cosine of held-out and training states; texts unseen in training are embedded here."""
        seen = len(self.text_index_)
        unseen = [text for text in dict.fromkeys(steps.state) if text not in self.text_index_]
        rows = {**self.text_index_, **{text: seen + k for k, text in enumerate(unseen)}}
        test_text = np.fromiter((rows[text] for text in steps.state), dtype=np.int64, count=len(steps.state))
        features = self.text_features_
        if unseen:
            features = sp.vstack([features, self.tfidf_.transform(unseen)[0]], format="csr")

        def similarity(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            return block_cosine(features, test_text[queries], self.train_text_[candidates])

        return similarity


class ExactMatchRegressor(_CandidateRegressor):
    """GiGPO-style reference: the mean return of the training steps of the same group
    whose state text is identical (across all t), with the fallbacks of the module docstring."""

    def _block_keys(self, steps: _Steps) -> Iterable[Hashable]:
        return zip(steps.iteration.tolist(), steps.group_id.tolist(), steps.state)

    def _similarity(self, steps: _Steps) -> Similarity:
        def uniform(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            return np.zeros((*queries.shape, candidates.shape[1]))

        return uniform


@dataclass(frozen=True)
class CrossValidation:
    """Scores of one regressor on the folds of :func:`episode_folds`.

    Attributes:
        fold_mse: (k,) mean squared error of the held-out steps of each fold.
        fallback_fraction: fraction of held-out steps (all folds) predicted by a
            group or global mean.
        effective_neighbours: mean ``1 / sum_j w_ij**2`` over held-out steps
            with candidates.
    """

    fold_mse: np.ndarray
    fallback_fraction: float
    effective_neighbours: float

    @property
    def mse(self) -> float:
        return float(self.fold_mse.mean())


def evaluate_folds(
    estimator: _CandidateRegressor, X: pd.DataFrame, y, folds: Sequence[tuple[np.ndarray, np.ndarray]]
) -> CrossValidation:
    """Fit a clone of ``estimator`` on each fold's training rows and score its held-out rows.

    Args:
        estimator: a regressor of this module (unfitted; it is cloned).
        X: steps, a DataFrame.
        y: (n,) returns of the steps.
        folds: ``(train_rows, test_rows)`` pairs, e.g. from :func:`episode_folds`.
    """
    y = _read_targets(y, len(X))
    if not folds:
        raise ValueError("folds must hold at least one (train_rows, test_rows) pair")
    fold_mse, fallback, effective, with_candidates = [], 0, 0.0, 0
    for train, test in folds:
        report = clone(estimator).fit(X.iloc[train], y[train]).predict_report(X.iloc[test])
        fold_mse.append(float(np.mean((report.prediction - y[test]) ** 2)))
        fallback += sum(report.fallbacks.values())
        used = report.source == FROM_CANDIDATES
        effective += float(report.effective_neighbours[used].sum())
        with_candidates += int(used.sum())
    held_out = sum(len(test) for _, test in folds)
    return CrossValidation(
        fold_mse=np.array(fold_mse),
        fallback_fraction=fallback / held_out,
        effective_neighbours=effective / max(with_candidates, 1),
    )

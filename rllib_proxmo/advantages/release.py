"""ProxMO as the authors' released code computes it (``estimator="proxmo_official"``).

The release (verl-based ``core_proxmo.py``) departs from the paper in ways that
change the numbers; this module reproduces it so that users can compare the
two (``docs/design.md`` §3.1 gives the exact per-row rule this code follows):

- rewards are scaled by 10, so a success scores 10;
- the episode baseline is the mean episode score over the group's *rows*
  (steps), so long episodes weigh more, and there is no division by the std
  (verl-agent's statistics and x10 scale: the release is built on it, and
  :mod:`rllib_proxmo.advantages.shipped_baselines` holds both);
- PSC is the paper's power form (:func:`~rllib_proxmo.advantages.episode_term.psc_weight`)
  with ``p = clip(mean score, 0, 1)`` on the 10-scale, "success" meaning a row
  score above 0.5, and a fixed strength ``beta = 0.05 / (sigmoid(1) - 0.5)``
  (about 0.216);
- TF-IDF keeps the 1024 most frequent terms of the whole batch and rows are
  divided by ``norm + 1e-8`` (an empty state then has similarity 0 even with
  itself);
- PSA compares every step of the group (no same-step rule);
- the invalid-action penalty (0.1, unscaled, so 1 % of a success's 10) is
  subtracted from the offending row's score and from its return-to-go, after
  the returns are discounted (verl-agent's ``apply_invalid_action_penalty`` on
  ``token_level_scores`` and ``step_rewards``). The penalised score then enters
  the group's row mean, and the penalised return the other rows' soft
  baselines; earlier steps of the episode are not penalised.

The paper-faithful ``"proxmo"`` estimator is the default of this library:
it is what the paper specifies, its episode term is scale-free (binary or
fractional rewards give the same z-scores), and its PSC weights depend on the
group success rate as Eq. 6 intends rather than saturating at p = 1 as soon as
one episode of the group succeeds.
"""

from __future__ import annotations

import numpy as np

from rllib_proxmo.advantages.batch import StepBatch
from rllib_proxmo.advantages.episode_term import psc_weight, sigmoid
from rllib_proxmo.advantages.shipped_baselines import row_group_mean_std, shipped_score_and_returns
from rllib_proxmo.advantages.step_term import similarity_softmax

__all__ = ["RELEASE_BETA", "RELEASE_MAX_FEATURES", "official_advantages"]

RELEASE_BETA = 0.05 / (float(sigmoid(np.float64(1.0))) - 0.5)
RELEASE_MAX_FEATURES = 1024
_NORM_EPS = 1e-8


def official_advantages(batch: StepBatch, *, alpha: float, tau: float, gamma: float, omega: float) -> np.ndarray:
    """(n,) advantages exactly as the authors' release computes them.

    Per row i of group g (rewards x10, ``c_i`` the row's penalty):
    ``score_i = 10 R(tau) - c_i``, ``mu_g`` the mean score over the group's rows,
    ``A_E = (score_i - mu_g) * w(score_i > 0.5, clip(mu_g, 0, 1))``,
    ``R_i = R_t(10 r) - c_i`` and ``A = A_E + omega * (R_i - sum_j w_ij R_j)``.

    Args:
        batch: the validated steps (``batch.penalty`` is the release's penalty column).
        alpha: PSC exponent (the release raises to this power).
        tau: softmax temperature over whole-group similarities.
        gamma: discount of the returns-to-go (on 10-scaled rewards).
        omega: weight of the step term (the release uses 1).
    """
    n = batch.num_steps
    if not n:
        return np.zeros(0)
    score, returns = shipped_score_and_returns(batch, gamma)
    mean, _ = row_group_mean_std(score, batch.group_index)
    weight = psc_weight(score > 0.5, np.clip(mean, 0.0, 1.0), alpha, RELEASE_BETA)
    episode_term = (score - mean) * weight
    return episode_term + omega * (returns - _group_soft_baseline(batch, returns, tau))


def _group_soft_baseline(batch: StepBatch, returns: np.ndarray, tau: float) -> np.ndarray:
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer  # here: the command lines skip its import

        features = TfidfVectorizer(max_features=RELEASE_MAX_FEATURES).fit_transform(batch.state).tocsr()
    except ValueError:  # no token in the whole batch
        features = None
    baseline = np.empty(batch.num_steps)
    for group in range(batch.num_groups):
        rows = np.flatnonzero(batch.group_index == group)
        if features is None:
            similarity = np.zeros((len(rows), len(rows)))
        else:
            block = features[rows]
            norms = np.sqrt(np.asarray(block.multiply(block).sum(axis=1)).ravel())
            block = block.multiply(1.0 / (norms + _NORM_EPS)[:, None]).tocsr()
            similarity = (block @ block.T).toarray()
        baseline[rows] = similarity_softmax(similarity, tau) @ returns[rows]
    return baseline

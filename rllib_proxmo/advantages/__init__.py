"""ProxMO's credit assignment and its baselines, framework-free (NumPy + scikit-learn).

Entry point::

    from rllib_proxmo.advantages import compute_advantages
    adv = compute_advantages(group_id, episode_id, t, reward, state, success, estimator="proxmo")

The pieces are public too: :func:`returns_to_go`, :func:`episode_zscore`,
:func:`psc_weight`, :func:`tfidf_features`, :func:`soft_baseline`,
:func:`gigpo_step_advantage`, :func:`shipped_advantages` (verl-agent's GRPO
and GiGPO), and :func:`advantage_diagnostics` for the per-batch statistics. No Ray or torch import happens here.
"""

from rllib_proxmo.advantages.batch import StepBatch, returns_to_go
from rllib_proxmo.advantages.episode_term import episode_zscore, psc_weight, success_rate
from rllib_proxmo.advantages.estimators import (
    ADVANTAGE_HYPERPARAMETERS,
    ESTIMATORS,
    SHIPPED_VERSION,
    AdvantageConfig,
    advantage_diagnostics,
    compute_advantages,
    compute_advantages_with_diagnostics,
)
from rllib_proxmo.advantages.release import official_advantages
from rllib_proxmo.advantages.shipped_baselines import GIGPO_NORMS, RECIPE_GIGPO_NORM, shipped_advantages
from rllib_proxmo.advantages.step_term import (
    PSA_SCOPES,
    SoftBaseline,
    check_scope,
    exact_match_groups,
    gigpo_step_advantage,
    soft_baseline,
    tfidf_features,
)

__all__ = [
    "ADVANTAGE_HYPERPARAMETERS",
    "ESTIMATORS",
    "GIGPO_NORMS",
    "PSA_SCOPES",
    "RECIPE_GIGPO_NORM",
    "SHIPPED_VERSION",
    "AdvantageConfig",
    "SoftBaseline",
    "StepBatch",
    "advantage_diagnostics",
    "check_scope",
    "compute_advantages",
    "compute_advantages_with_diagnostics",
    "episode_zscore",
    "exact_match_groups",
    "gigpo_step_advantage",
    "official_advantages",
    "psc_weight",
    "returns_to_go",
    "shipped_advantages",
    "soft_baseline",
    "success_rate",
    "tfidf_features",
]

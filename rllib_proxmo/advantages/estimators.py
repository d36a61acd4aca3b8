"""The advantage estimators: ProxMO, its ablations, GRPO, GiGPO and the released ProxMO, GRPO, GiGPO.

===================  ====================================  ===========================
estimator            episode term                          step term (times omega)
===================  ====================================  ===========================
``proxmo``           PSC-weighted z-score (Eq. 6-7)        ``R_t - B_t``, PSA (Eq. 9-11)
``proxmo_no_psc``    z-score (Eq. 5)                       PSA
``proxmo_no_psa``    PSC-weighted z-score                  none
``grpo``             z-score                               none
``gigpo``            z-score                               exact-match step groups
``proxmo_official``  the authors' release (see ``release``)
``grpo_official``    verl-agent's GRPO (see ``shipped_baselines``)
``gigpo_official``   verl-agent's GiGPO as its recipes run it (``gigpo_norm``)
===================  ====================================  ===========================

The paper estimators' z-scores (the episode term and GiGPO's step term) divide
by the unbiased standard deviation (``docs/design.md`` §2 gives the reason).

Every paper estimator then subtracts the step's invalid-action penalty (the
optional ``penalty`` column) from that step's advantage alone::

    A_t = episode_term + omega * step_term_t - penalty_t

The penalty stays out of R(tau), the group z-score, PSC's success rate and the
returns-to-go that PSA and GiGPO compare, so one malformed output cannot move
the credit of its episode or of the other rollouts. On the advantage scale the
release's 0.1 is 10 % of a success in a p = 0.5 group (episode term ~1), 5.8 %
in a p = 0.25 group (sqrt(3) ~ 1.73), and it is the whole signal of an
otherwise uniform group (all succeed or all fail: episode term 0).
The ``*_official`` estimators apply the penalty as their release does (see
:mod:`rllib_proxmo.advantages.release` and :mod:`rllib_proxmo.advantages.shipped_baselines`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from rllib_proxmo.advantages.batch import StepBatch
from rllib_proxmo.advantages.episode_term import episode_zscore, psc_weight, success_rate
from rllib_proxmo.advantages.release import official_advantages
from rllib_proxmo.advantages.shipped_baselines import (
    GIGPO_NORMS,
    MEAN_STD_NORM,
    RECIPE,
    TRAINER_GIGPO_NORM,
    check_gigpo_norm,
    recipe_gigpo_norm,
    shipped_advantages,
)
from rllib_proxmo.advantages.step_term import (
    check_scope,
    exact_match_groups,
    gigpo_step_advantage,
    soft_baseline,
    tfidf_features,
)

__all__ = [
    "ADVANTAGE_HYPERPARAMETERS",
    "ESTIMATORS",
    "SHIPPED_VERSION",
    "AdvantageConfig",
    "advantage_diagnostics",
    "compute_advantages",
    "compute_advantages_with_diagnostics",
]

ESTIMATORS = (
    "proxmo",
    "grpo",
    "gigpo",
    "proxmo_no_psc",
    "proxmo_no_psa",
    "proxmo_official",
    "grpo_official",
    "gigpo_official",
)

#: The paper estimators whose authors' code departs from their equations, and the estimator that runs that code.
SHIPPED_VERSION = {"grpo": "grpo_official", "gigpo": "gigpo_official", "proxmo": "proxmo_official"}

#: Smallest PSA temperature: the smallest normal float64, so that similarity / tau (similarity <= 1) is finite.
MIN_TAU = float(np.finfo(np.float64).tiny)

_RELEASED = {"proxmo_official", "grpo_official", "gigpo_official"}
_USES_PSC = {"proxmo", "proxmo_no_psa"}
_USES_PSA = {"proxmo", "proxmo_no_psc"}


@dataclass(frozen=True)
class AdvantageConfig:
    """Which estimator and its hyperparameters; checked on construction.

    This dataclass is the one place the credit-assignment defaults are written
    (the paper's, Appendix C.1): ``ProxMOConfig`` takes its attributes from its
    fields, the main job derives its command-line flags from them and the Tune
    runner its sweepable settings. Each field's ``metadata["help"]`` is its
    documentation.

    Raises:
        ValueError: an unknown estimator or scope, a non-finite number,
            ``alpha <= 0``, ``tau < MIN_TAU`` (2.2e-308), ``gamma`` outside [0, 1], an unknown
            ``gigpo_norm``, or a ``beta`` other than the paper's with ``proxmo_official`` (the release fixes it).
    """

    estimator: str = field(default="proxmo", metadata={"help": f"credit assignment: one of {', '.join(ESTIMATORS)}"})
    alpha: float = field(
        default=4.0, metadata={"help": "PSC steepness alpha, > 0: the exponent in sigmoid(d**alpha) (Eq. 6)"}
    )
    beta: float = field(default=0.1, metadata={"help": "PSC strength beta (Eq. 6)"})
    tau: float = field(default=0.1, metadata={"help": "PSA softmax temperature tau, > 0 (Eq. 10)"})
    gamma: float = field(default=0.95, metadata={"help": "discount of the returns-to-go, in [0, 1] (Eq. 8)"})
    omega: float = field(default=1.0, metadata={"help": "weight omega of the step-level term (Eq. 12)"})
    psa_scope: str = field(
        default="same_step",
        metadata={
            "help": "PSA candidates: 'same_step' (the group's steps at the same t, Eq. 10) or 'group' (all its steps)"
        },
    )
    gigpo_norm: str = field(
        default=RECIPE,
        metadata={
            "help": f"gigpo_official's normalisation, one of {', '.join(GIGPO_NORMS)}: 'mean_norm' subtracts the "
            "group mean, 'mean_std_norm' also divides by the std, 'recipe' takes verl-agent's recipe for the env "
            f"(ALFWorld mean_std_norm, WebShop mean_norm, others {TRAINER_GIGPO_NORM})"
        },
    )

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; choose one of {ESTIMATORS}")
        for name in ("alpha", "beta", "tau", "gamma", "omega"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0 (PSC's exponent of d = 1 - p and of p), got {self.alpha}")
        if self.tau < MIN_TAU:
            raise ValueError(
                f"tau must be >= {MIN_TAU:.3g} (softmax temperature > 0 whose similarity / tau stays finite), "
                f"got {self.tau}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        check_scope(self.psa_scope)
        check_gigpo_norm(self.gigpo_norm)
        if self.estimator == "proxmo_official" and self.beta != _default("beta"):
            raise ValueError(
                "proxmo_official uses the release's fixed strength beta=0.05/(sigmoid(1)-0.5); "
                "the beta argument applies to the paper's estimators only"
            )

    def for_env(self, env: object) -> AdvantageConfig:
        """This config with ``gigpo_norm="recipe"`` replaced by verl-agent's recipe for ``env`` (an env id)."""
        return replace(self, gigpo_norm=recipe_gigpo_norm(env)) if self.gigpo_norm == RECIPE else self


def _default(name: str):
    return next(f.default for f in fields(AdvantageConfig) if f.name == name)


#: The hyperparameters of :class:`AdvantageConfig` (every field but ``estimator``): what a sweep may vary.
ADVANTAGE_HYPERPARAMETERS = tuple(f.name for f in fields(AdvantageConfig) if f.name != "estimator")


def _resolve(config: AdvantageConfig | None, settings: dict) -> AdvantageConfig:
    """``config`` with ``settings`` applied (a fresh default config when ``config`` is None)."""
    if config is None:
        return AdvantageConfig(**settings)
    if not isinstance(config, AdvantageConfig):
        raise TypeError(f"config must be an AdvantageConfig, got {type(config).__name__}")
    return replace(config, **settings) if settings else config


def compute_advantages_with_diagnostics(
    group_id,
    episode_id,
    t,
    reward,
    state: Sequence[str],
    success,
    config: AdvantageConfig | None = None,
    *,
    penalty=None,
    **settings,
) -> tuple[np.ndarray, dict[str, float]]:
    """Advantages and the batch diagnostics of :func:`advantage_diagnostics` in one pass.

    Takes the same arguments as :func:`compute_advantages`.
    """
    cfg = _resolve(config, settings)
    batch = StepBatch.from_arrays(group_id, episode_id, t, reward, state, success, penalty)
    diagnostics = _batch_diagnostics(batch)
    if cfg.estimator in _RELEASED:
        advantages = _check_finite(_released_advantages(batch, cfg), batch)
        return advantages, {**diagnostics, **_advantage_moments(advantages)}

    episode_term = episode_zscore(batch.episode_return, batch.episode_group)
    if cfg.estimator in _USES_PSC:
        p = success_rate(batch.episode_success, batch.episode_group)
        weight = psc_weight(batch.episode_success, p, cfg.alpha, cfg.beta)
        episode_term = weight * episode_term
        if len(weight):
            diagnostics.update(psc_weight_min=float(weight.min()), psc_weight_max=float(weight.max()))
    advantages = episode_term[batch.episode_index]

    if cfg.estimator in _USES_PSA:
        returns = batch.returns_to_go(cfg.gamma)
        features, feature_index = tfidf_features(batch.state)
        soft = soft_baseline(batch.group_index, batch.t, returns, features, feature_index, cfg.tau, cfg.psa_scope)
        advantages = advantages + cfg.omega * (returns - soft.baseline)
        if batch.num_steps:
            diagnostics.update(
                psa_weight_entropy=float(soft.entropy.mean()),
                psa_effective_neighbours=float(soft.effective_neighbours.mean()),
                psa_num_candidates=float(soft.num_candidates.mean()),
            )
    elif cfg.estimator == "gigpo":
        step_group = exact_match_groups(batch.group_index, batch.state)
        advantages = advantages + cfg.omega * gigpo_step_advantage(step_group, batch.returns_to_go(cfg.gamma))
    advantages = _check_finite(advantages - batch.penalty, batch)
    return advantages, {**diagnostics, **_advantage_moments(advantages)}


def _released_advantages(batch: StepBatch, cfg: AdvantageConfig) -> np.ndarray:
    """(n,) advantages of an ``*_official`` estimator, penalty included."""
    if cfg.estimator == "proxmo_official":
        return official_advantages(batch, alpha=cfg.alpha, tau=cfg.tau, gamma=cfg.gamma, omega=cfg.omega)
    if cfg.estimator == "grpo_official":  # norm_adv_by_std_in_grpo: true in every recipe
        return shipped_advantages(batch, step_term=False, norm=MEAN_STD_NORM, gamma=cfg.gamma, omega=cfg.omega)
    norm = cfg.for_env(None).gigpo_norm  # an unresolved "recipe": verl-agent's trainer default
    return shipped_advantages(batch, step_term=True, norm=norm, gamma=cfg.gamma, omega=cfg.omega)


def _check_finite(advantages: np.ndarray, batch: StepBatch) -> np.ndarray:
    """``advantages`` (n,), or a ValueError when finite rewards overflowed float64 on the way.

    Rewards are checked finite on input, but their sums (episode returns, returns-to-go)
    and the squares of the group spread can still exceed float64's range (about 1.8e308;
    squares from about 1.3e154).
    """
    if np.all(np.isfinite(advantages)):
        return advantages
    largest = float(np.abs(batch.reward).max()) if batch.num_steps else 0.0
    raise ValueError(
        f"the advantages overflow float64 ({int(np.sum(~np.isfinite(advantages)))} of {len(advantages)} "
        f"not finite): the rewards (largest |r| = {largest:.3g}) are too large for their returns or group "
        "spread; rescale the rewards"
    )


def compute_advantages(
    group_id,
    episode_id,
    t,
    reward,
    state: Sequence[str],
    success,
    config: AdvantageConfig | None = None,
    *,
    penalty=None,
    **settings,
) -> np.ndarray:
    """One advantage per step, ``A = episode term + omega * step term - penalty``.

    Args:
        group_id: (n,) ints, task group of each step (the N rollouts of one
            task share it).
        episode_id: (n,) ints, episode of each step; an episode lies in one group.
        t: (n,) ints, 0-based step index inside its episode; each episode holds
            exactly the steps 0..T-1.
        reward: (n,) floats, immediate rewards r_t (finite).
        state: n strings, the environment's raw observation text at each step
            (what PSA and GiGPO compare; not the rendered prompt).
        success: (n,) bools (or 0/1), whether the step's episode succeeded;
            the same for all steps of an episode. Drives PSC's success rate.
        config: the estimator and its hyperparameters (default: the paper's).
        penalty: optional (n,) floats >= 0, the invalid-action penalty of each
            step (``Turn.penalty``; None: no penalty). Subtracted from that
            step's advantage only, outside every episode and step statistic
            (see the module docstring); the ``*_official`` estimators apply it
            their release's way.
        **settings: fields of :class:`AdvantageConfig` (``estimator``, ``alpha``,
            ``beta``, ``tau``, ``gamma``, ``omega``, ``psa_scope``, ``gigpo_norm``)
            that override ``config``.

    Rows may come in any order; the result is in the input order.

    Degenerate but legal input gives finite values: a group of one episode,
    all-success and all-fail groups have a zero episode term; a state with no
    token (empty, punctuation only) has similarity 1 with itself and 0 with
    others in PSA; a single-step episode has ``R_0 = r_0``; an empty batch
    gives an empty array.

    Returns:
        (n,) float64 advantages, later broadcast to the step's response tokens.

    Raises:
        ValueError: for mismatched lengths, NaN/inf rewards, a negative or
            non-finite penalty, an episode split across groups, non-binary or inconsistent success values, bad step
            indices, ``tau <= 0``, an unknown estimator or scope.
    """
    return compute_advantages_with_diagnostics(
        group_id, episode_id, t, reward, state, success, config, penalty=penalty, **settings
    )[0]


def advantage_diagnostics(
    group_id,
    episode_id,
    t,
    reward,
    state: Sequence[str],
    success,
    config: AdvantageConfig | None = None,
    *,
    penalty=None,
    **settings,
) -> dict[str, float]:
    """Batch statistics of the credit assignment, flat and ready to log as metrics.

    Keys (all floats):

    - ``num_steps``, ``num_episodes``, ``num_groups``, ``success_rate`` (fraction
      of episodes), ``zero_std_group_fraction`` (groups whose episode returns
      are all equal, so GRPO's episode term is 0 for them);
    - ``gigpo_singleton_fraction`` (size 1) and ``gigpo_step_group_size_{2,3,gt3}``:
      fraction of steps whose exact-match step group (same task group and
      identical state text) has that size, the paper's Table 2; reported for
      every estimator since it describes the batch;
    - ``invalid_penalty_step_fraction`` (steps with a penalty > 0) and
      ``invalid_penalty_mean`` (mean penalty per step);
    - with PSC: ``psc_weight_min``, ``psc_weight_max``;
    - with PSA: ``psa_weight_entropy`` (nats), ``psa_effective_neighbours``
      (``1 / sum w**2``) and ``psa_num_candidates``, means over steps;
    - ``advantage_mean``, ``advantage_std`` of the chosen estimator.

    Takes the same arguments as :func:`compute_advantages`.
    """
    return compute_advantages_with_diagnostics(
        group_id, episode_id, t, reward, state, success, config, penalty=penalty, **settings
    )[1]


def _batch_diagnostics(batch: StepBatch) -> dict[str, float]:
    num_episodes = len(batch.episode_group)
    stats = {
        "num_steps": float(batch.num_steps),
        "num_episodes": float(num_episodes),
        "num_groups": float(batch.num_groups),
    }
    if not batch.num_steps:
        return stats
    zscore = episode_zscore(batch.episode_return, batch.episode_group)
    groups_with_signal = np.zeros(batch.num_groups, dtype=bool)
    groups_with_signal[batch.episode_group] |= zscore != 0
    step_group = exact_match_groups(batch.group_index, batch.state)
    size = np.bincount(step_group)[step_group]
    stats.update(
        success_rate=float(batch.episode_success.mean()),
        zero_std_group_fraction=float(1.0 - groups_with_signal.mean()),
        gigpo_singleton_fraction=float(np.mean(size == 1)),
        gigpo_step_group_size_2=float(np.mean(size == 2)),
        gigpo_step_group_size_3=float(np.mean(size == 3)),
        gigpo_step_group_size_gt3=float(np.mean(size > 3)),
        invalid_penalty_step_fraction=float(np.mean(batch.penalty > 0)),
        invalid_penalty_mean=float(batch.penalty.mean()),
    )
    return stats


def _advantage_moments(advantages: np.ndarray) -> dict[str, float]:
    if not len(advantages):
        return {}
    return {"advantage_mean": float(advantages.mean()), "advantage_std": float(advantages.std())}

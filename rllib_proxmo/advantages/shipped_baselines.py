"""GRPO and GiGPO as verl-agent ships them (``estimator="grpo_official"`` / ``"gigpo_official"``).

The paper's GRPO and GiGPO rows (Table 1) were trained with verl-agent's
``compute_grpo_outcome_advantage`` and ``gigpo/core_gigpo.py`` under its
ALFWorld and WebShop recipes (``examples/gigpo_trainer/run_{alfworld,webshop}.sh``).
Where that code departs from the equations that ``"grpo"`` and ``"gigpo"``
follow, this module does what the code does (``docs/design.md`` §3.2 lists the
differences and their sizes):

- verl-agent's envs score a success 10 (rewards x10), and every step row
  carries its episode's score;
- the episode statistics are the mean and unbiased standard deviation of the
  scores of the group's *rows* (steps), so a long episode weighs as many
  times as it has steps; a group of one row gets mean 0 and std 1;
- the normalisation mode (``algorithm.gigpo.mode``): ``"mean_norm"`` subtracts
  the mean only, ``"mean_std_norm"`` also divides by ``std + 1e-6``; the
  ALFWorld recipe runs ``mean_std_norm``, the WebShop recipe ``mean_norm``
  (:data:`RECIPE_GIGPO_NORM`). GRPO always divides (``norm_adv_by_std_in_grpo``
  defaults to true and no recipe changes it). No zero-spread rule: a uniform
  group gives ``0 / (0 + 1e-6) = 0``;
- step groups: the rows of a task group whose state texts are identical
  (any t), compared on discounted returns-to-go of the x10 rewards
  (``algorithm.gamma``, 0.95 in both recipes); a step group of one row gets
  mean = its own return and std 1, so step advantage 0; the step term is
  weighted by ``step_advantage_w`` (omega, 1 in both recipes);
- the invalid-action penalty (0.1, ``invalid_action_penalty_coef``) is
  subtracted, unscaled, from the offending row's score and from its already
  discounted return-to-go (``apply_invalid_action_penalty``), so it enters the
  group's and the step group's statistics; earlier steps are not penalised.
"""

from __future__ import annotations

import numpy as np

from rllib_proxmo.advantages.batch import StepBatch
from rllib_proxmo.advantages.episode_term import EPS, group_mean_std
from rllib_proxmo.advantages.step_term import exact_match_groups

__all__ = [
    "GIGPO_NORMS",
    "MEAN_NORM",
    "MEAN_STD_NORM",
    "RECIPE",
    "RECIPE_GIGPO_NORM",
    "SHIPPED_REWARD_SCALE",
    "TRAINER_GIGPO_NORM",
    "check_gigpo_norm",
    "recipe_gigpo_norm",
    "row_group_mean_std",
    "shipped_advantages",
    "shipped_score_and_returns",
]

#: Success reward of verl-agent's ALFWorld and WebShop envs (``10.0 * won``): the x10 scale.
SHIPPED_REWARD_SCALE = 10.0
MEAN_NORM, MEAN_STD_NORM = "mean_norm", "mean_std_norm"
#: ``gigpo_norm`` value that takes the env's recipe (:func:`recipe_gigpo_norm`).
RECIPE = "recipe"
GIGPO_NORMS = (RECIPE, MEAN_NORM, MEAN_STD_NORM)
#: ``algorithm.gigpo.mode`` of verl-agent's GiGPO recipes, by this project's env id.
RECIPE_GIGPO_NORM = {"ALFWorld-v0": MEAN_STD_NORM, "WebShop-v0": MEAN_NORM}
#: verl-agent's trainer default (``ppo_trainer.yaml``): the mode of an env without a recipe.
TRAINER_GIGPO_NORM = MEAN_NORM


def check_gigpo_norm(norm: str) -> None:
    """Raise ``ValueError`` unless ``norm`` is one of :data:`GIGPO_NORMS`."""
    if norm not in GIGPO_NORMS:
        raise ValueError(f"gigpo_norm must be one of {GIGPO_NORMS}, got {norm!r}")


def recipe_gigpo_norm(env: object) -> str:
    """The normalisation mode of verl-agent's GiGPO recipe for ``env`` (an env id; others: the trainer default)."""
    return RECIPE_GIGPO_NORM.get(env, TRAINER_GIGPO_NORM) if isinstance(env, str) else TRAINER_GIGPO_NORM


def row_group_mean_std(values: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """verl-agent's episode statistics: per-row group mean and unbiased std, a lone row's group giving (0, 1).

    Args:
        values: (n,) one value per row (step).
        group: (n,) dense group numbers.

    Returns:
        ``(mean, std)``, each (n,): the statistics of each row's group.
    """
    count, mean, std = group_mean_std(values, group, ddof=1)
    lone = count < 2
    return np.where(lone, 0.0, mean), np.where(lone, 1.0, std)


def shipped_score_and_returns(batch: StepBatch, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row's penalised x10 episode score and penalised x10 return-to-go, as verl-agent builds them.

    Returns:
        ``(score, returns)``, each (n,): ``10 R(tau) - c_i`` and ``R_t(10 r) - c_i``
        with ``c_i`` the row's penalty.
    """
    score = SHIPPED_REWARD_SCALE * batch.episode_return[batch.episode_index] - batch.penalty
    returns = SHIPPED_REWARD_SCALE * batch.returns_to_go(gamma) - batch.penalty
    return score, returns


def _normalise(centred: np.ndarray, std: np.ndarray, norm: str) -> np.ndarray:
    return centred / (std + EPS) if norm == MEAN_STD_NORM else centred


def shipped_advantages(batch: StepBatch, *, step_term: bool, norm: str, gamma: float, omega: float) -> np.ndarray:
    """(n,) verl-agent's GiGPO advantages (``step_term=True``) or its GRPO ones (``False``, always divided by std).

    Per row i of task group g (x10 rewards, ``c_i`` the row's penalty):
    ``score_i = 10 R(tau) - c_i``; ``A_E = (score_i - mu_g) [/ (sigma_g + 1e-6)]`` with
    ``mu_g, sigma_g`` the mean and unbiased std of ``score`` over the rows of g;
    ``R_i = R_t(10 r) - c_i``; ``A_S = (R_i - m_k) [/ (s_k + 1e-6)]`` over the rows k
    of i's step group (0 for a step group of one row); ``A = A_E + omega A_S``.

    Args:
        batch: the validated steps (``batch.penalty`` is verl-agent's penalty column).
        step_term: add GiGPO's step term (False: GRPO).
        norm: ``"mean_norm"`` or ``"mean_std_norm"`` (resolved; GRPO passes ``"mean_std_norm"``).
        gamma: discount of the returns-to-go (``algorithm.gamma``).
        omega: weight of the step term (``step_advantage_w``).
    """
    if not batch.num_steps:
        return np.zeros(0)
    score, returns = shipped_score_and_returns(batch, gamma)
    mean, std = row_group_mean_std(score, batch.group_index)
    advantages = _normalise(score - mean, std, norm)
    if step_term:
        step_group = exact_match_groups(batch.group_index, batch.state)
        count, step_mean, step_std = group_mean_std(returns, step_group, ddof=1)
        centred = np.where(count < 2, 0.0, returns - step_mean)
        advantages = advantages + omega * _normalise(centred, step_std, norm)
    return advantages

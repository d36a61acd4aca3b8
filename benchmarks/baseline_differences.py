"""How far the paper's GRPO and GiGPO are from verl-agent's, one difference at a time, on a sample batch.

The sample batch is one household-MDP iteration (:mod:`envs.household.rollouts`): 16 tasks x 8
rollouts of up to 15 steps, states rendered without noise (so rollouts share state texts as in
ALFWorld), and 5 % of the steps invalid (penalty 0.1). The script walks from the paper's
estimator (``grpo`` / ``gigpo``, with the population episode std this project used before) to
verl-agent's as its recipes run it (``grpo_official``, ``gigpo_official``), applying one
difference per stage in the order of the table, and prints for each stage the largest and the
mean absolute change of the advantages, and the largest over ``--seeds`` batches. The end points
are checked against the library's estimators. Stages are cumulative, so a size depends on the
order (the x10 scale, for one, changes what the penalty weighs once the penalty enters the scores).

Usage: ``python benchmarks/baseline_differences.py [--seeds 0 1 2 3 4]``; ``docs/design.md`` §3.2
holds its output.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from envs.household.rollouts import roll_out
from rllib_proxmo.advantages import AdvantageConfig, compute_advantages
from rllib_proxmo.advantages.batch import StepBatch
from rllib_proxmo.advantages.episode_term import EPS, ZERO_STD, group_mean_std
from rllib_proxmo.advantages.shipped_baselines import SHIPPED_REWARD_SCALE, row_group_mean_std
from rllib_proxmo.advantages.step_term import exact_match_groups, gigpo_step_advantage

GAMMA = AdvantageConfig().gamma
INVALID_FRACTION, PENALTY = 0.05, 0.1


@dataclass(frozen=True)
class Stage:
    """The conventions of one stage (the paper's before any change)."""

    ddof: int = 0  # episode-term std: 0 population (this project before), 1 unbiased
    over_rows: bool = False  # episode mean and std over the group's rows (verl-agent), not its episodes
    scale: float = 1.0  # reward scale
    penalty_inside: bool = False  # the penalty in the row's score and return, not subtracted after
    divide: bool = True  # divide by the std (mean_std_norm); False: mean_norm


STAGES = (
    ("paper (population episode std, before)", Stage()),
    ("unbiased episode std (the paper family's now)", Stage(ddof=1)),
    ("episode mean and std over the group's rows", Stage(ddof=1, over_rows=True)),
    ("rewards x10", Stage(ddof=1, over_rows=True, scale=SHIPPED_REWARD_SCALE)),
    (
        "penalty in the row's score and return",
        Stage(ddof=1, over_rows=True, scale=SHIPPED_REWARD_SCALE, penalty_inside=True),
    ),
    (
        "mean_norm: no division by the std",
        Stage(ddof=1, over_rows=True, scale=SHIPPED_REWARD_SCALE, penalty_inside=True, divide=False),
    ),
)


def staged_advantages(batch: StepBatch, stage: Stage, *, step_term: bool) -> np.ndarray:
    """(n,) GRPO (``step_term=False``) or GiGPO advantages under ``stage``'s conventions."""
    penalty = batch.penalty if stage.penalty_inside else np.zeros(batch.num_steps)
    if stage.over_rows:
        score = stage.scale * batch.episode_return[batch.episode_index] - penalty
        mean, std = row_group_mean_std(score, batch.group_index)
        episode = (score - mean) / (std + EPS) if stage.divide else score - mean
    else:
        returns = stage.scale * batch.episode_return
        _, mean, std = group_mean_std(returns, batch.episode_group, ddof=stage.ddof)
        episode = np.where(std < ZERO_STD, 0.0, (returns - mean) / (std + EPS))[batch.episode_index]
    advantages = episode - (0.0 if stage.penalty_inside else batch.penalty)
    if step_term:
        step_group = exact_match_groups(batch.group_index, batch.state)
        returns = stage.scale * batch.returns_to_go(GAMMA) - penalty
        if stage.divide:
            advantages = advantages + gigpo_step_advantage(step_group, returns)
        else:
            count, mean, _ = group_mean_std(returns, step_group)
            advantages = advantages + np.where(count < 2, 0.0, returns - mean)
    return advantages


def sample_batch(seed: int) -> StepBatch:
    """One household iteration (16 x 8, up to 15 steps) with ``INVALID_FRACTION`` of its steps penalised."""
    rollouts = roll_out(seed, tasks=16, episodes=8, horizon=15, gamma=GAMMA)
    rng = np.random.default_rng([seed, 2])
    state = rollouts.texts(0.0, rng)
    penalty = np.where(rng.random(len(state)) < INVALID_FRACTION, PENALTY, 0.0)
    columns = (rollouts.group_id, rollouts.episode_id, rollouts.t, rollouts.reward, state, rollouts.success)
    return StepBatch.from_arrays(*columns, penalty)


def _columns(batch: StepBatch) -> tuple:
    success = batch.episode_success[batch.episode_index]
    return batch.group_index, batch.episode_index, batch.t, batch.reward, batch.state, success


def _check_end_points(batch: StepBatch) -> None:
    """The walk passes the library's paper estimators (stage 1) and ends at verl-agent's (stages 4 and 5)."""
    for step_term, paper, shipped in ((False, "grpo", "grpo_official"), (True, "gigpo", "gigpo_official")):
        library = compute_advantages(*_columns(batch), penalty=batch.penalty, estimator=paper)
        np.testing.assert_allclose(staged_advantages(batch, STAGES[1][1], step_term=step_term), library, atol=1e-9)
        for (_, stage), norm in zip(STAGES[4 : 6 if step_term else 5], ("mean_std_norm", "mean_norm")):
            expected = compute_advantages(*_columns(batch), penalty=batch.penalty, estimator=shipped, gigpo_norm=norm)
            np.testing.assert_allclose(staged_advantages(batch, stage, step_term=step_term), expected, atol=1e-6)


def _row(label: str, change: list[np.ndarray]) -> str:
    worst = max(float(c.max()) for c in change)
    return f"| {label} | {change[0].max():.3f} | {change[0].mean():.3f} | {worst:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    batches = [sample_batch(seed) for seed in args.seeds]
    for batch in batches:
        _check_end_points(batch)
    first = batches[0]
    lengths = np.bincount(first.episode_index)
    print(
        f"sample batch (seed {args.seeds[0]}): {first.num_steps} steps, {len(lengths)} episodes of "
        f"{lengths.min()}-{lengths.max()} steps, success rate {first.episode_success.mean():.2f}, "
        f"{int(np.sum(first.penalty > 0))} penalised steps"
    )
    for name, step_term, last in (("grpo", False, 5), ("gigpo", True, 6)):
        print(f"\n{name}: change of the advantages at each stage (cumulative)\n")
        print(f"| stage | max abs (seed {args.seeds[0]}) | mean abs | max abs, {len(batches)} seeds |")
        print("| --- | ---: | ---: | ---: |")
        stages = [[staged_advantages(b, stage, step_term=step_term) for b in batches] for _, stage in STAGES[:last]]
        for (label, _), before, after in zip(STAGES[1:last], stages, stages[1:]):
            print(_row(label, [np.abs(a - b) for a, b in zip(after, before)]))
        for index, norm in zip(range(4, last), ("mean_std_norm", "mean_norm")):
            total = [np.abs(a - b) for a, b in zip(stages[index], stages[1])]
            print(_row(f"total: {name} -> {name}_official" + (f" ({norm})" if step_term else ""), total))


if __name__ == "__main__":
    main()

"""benchmarks/learning_mdp.py: the softmax policy's gradient, a real training run, episodes to a threshold."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.learning_mdp import SoftmaxPolicy, episodes_to_reach, parse_args, train

TINY = "--rooms 3 --horizon 15 --task-pool 2 --tasks 2 --episodes 8 --iterations 12 --window 3".split()


def test_score_direction_is_the_gradient_of_log_probability():
    """Finite differences of log pi(a|s): x_i * d_j per unit of W[i, j] and d_j per unit of b[j]."""
    policy = SoftmaxPolicy(vocabulary_size=32, lr=0.01)
    rng = np.random.default_rng(0)
    policy.params["W"][:] = rng.normal(size=(32, 32))
    policy.params["b"][:] = rng.normal(size=32)
    x, commands = policy.features(
        "put some mug in/on the shelf You are in the kitchen.",
        ["go to the hallway", "take the mug 1 from the table 1", "examine the shelf 1", "look"],
    )
    action = 1
    pi = policy.probabilities(x, commands)
    direction = policy.score_direction(commands, pi, action)
    analytic = {"W": np.outer(x, direction), "b": direction}
    step = 1e-6
    for name, index in (("W", (int(np.flatnonzero(x)[0]), int(np.flatnonzero(commands[action])[-1]))), ("b", (3,))):
        for position in (index, tuple(int(i) for i in np.unravel_index(7, policy.params[name].shape))):
            policy.params[name][position] += step
            up = np.log(policy.probabilities(x, commands)[action])
            policy.params[name][position] -= 2 * step
            down = np.log(policy.probabilities(x, commands)[action])
            policy.params[name][position] += step
            assert (up - down) / (2 * step) == pytest.approx(analytic[name][position], abs=1e-6)


@pytest.mark.parametrize("estimator", ["grpo", "gigpo", "proxmo"])
def test_policy_gradient_improves_success_on_a_tiny_noise_free_instance(estimator):
    """Two 3-room tasks, 12 iterations of 2 x 8 rollouts: from the random policy to mostly solving them."""
    curve = train(0, estimator, 0.0, parse_args(TINY))
    first, last = np.mean(curve[:3]), np.mean(curve[-3:])
    assert last >= 0.6 and last >= first + 0.4, f"{estimator}: success {first:.2f} -> {last:.2f}: {curve}"


def test_episodes_to_reach_counts_episodes_until_the_rolling_success_reaches_the_threshold():
    curve = [0.0, 0.2, 0.6, 0.7, 0.9, 1.0]
    # rolling means over 2 iterations: 0.1, 0.4, 0.65, 0.8, 0.95
    assert episodes_to_reach(curve, 0.5, window=2, episodes_per_iteration=10) == 40
    assert episodes_to_reach(curve, 0.8, window=2, episodes_per_iteration=10) == 50
    assert episodes_to_reach(curve, 0.99, window=2, episodes_per_iteration=10) is None


def test_bad_settings_are_refused_before_training(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--task-pool", "4", "--tasks", "8"])
    assert "--task-pool must be >= --tasks (8)" in capsys.readouterr().err

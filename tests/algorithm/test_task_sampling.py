"""Drawing an iteration's training tasks: uniformly, or weighted by each task's chance of a mixed group."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from rllib_proxmo.algorithm.task_sampling import (
    PRIOR_LOSSES,
    PRIOR_WINS,
    TaskOutcomes,
    mixed_group_probability,
    sampling_problem,
    uniform_tasks,
)


@pytest.mark.parametrize(("wins", "plays"), [(0, 0), (0, 4), (4, 4), (1, 4), (3, 11), (0, 40)])
@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_the_mixed_group_chance_is_the_beta_posterior_expectation(wins, plays, group_size):
    posterior = stats.beta(PRIOR_WINS + wins, PRIOR_LOSSES + plays - wins)
    expected, _ = integrate.quad(lambda p: (1 - p**group_size - (1 - p) ** group_size) * posterior.pdf(p), 0, 1)
    got = mixed_group_probability(np.array([wins]), np.array([plays]), group_size)
    assert got.shape == (1,) and got[0] == pytest.approx(expected, abs=1e-7)


def test_a_group_of_one_is_never_mixed_and_outcomes_on_one_side_lower_the_chance():
    np.testing.assert_allclose(mixed_group_probability(np.array([0, 3]), np.array([5, 5]), 1), 0.0, atol=1e-12)
    chances = mixed_group_probability(np.array([0, 0, 0, 2, 8]), np.array([0, 4, 8, 4, 8]), 4)
    never, lost_once, lost_twice, half, won_twice = chances
    assert half > never > lost_once > lost_twice > 0 and won_twice == pytest.approx(lost_twice)
    assert np.all((chances > 0) & (chances < 1))


def test_uniform_tasks_are_distinct_while_there_are_enough():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert sorted(uniform_tasks(rng, ["a", "b", "c", "d"], 4)) == ["a", "b", "c", "d"]
        assert len(set(uniform_tasks(rng, ["a", "b", "c", "d"], 3))) == 3
    # More groups than tasks: drawn with replacement; no list: every env picks from its seed.
    beyond = uniform_tasks(rng, ["a", "b"], 5)
    assert len(beyond) == 5 and set(beyond) <= {"a", "b"}
    assert uniform_tasks(rng, None, 2) == [None, None]


def test_outcomes_count_wins_and_plays_per_task_and_refuse_an_unlisted_one():
    outcomes = TaskOutcomes(["a", "b", "c"])
    outcomes.record([("a", True), ("a", False), ("c", False), ("a", True)])
    assert outcomes.wins.tolist() == [2, 0, 0] and outcomes.plays.tolist() == [3, 0, 1]
    with pytest.raises(KeyError):
        outcomes.record([("z", True)])
    with pytest.raises(ValueError, match="distinct"):
        TaskOutcomes(["a", "b", "a"])


def test_informative_draws_follow_the_mixed_group_chances():
    outcomes = TaskOutcomes(["lost", "won", "mixed", "new"])
    outcomes.record([("lost", False)] * 8 + [("won", True)] * 8 + [("mixed", True), ("mixed", False)] * 4)
    chance = outcomes.mixed_group_probability(4)
    rng = np.random.default_rng(3)
    draws = [outcomes.draw(rng, 1, 4) for _ in range(20000)]
    frequency = np.array([sum(tasks == [task] for tasks, _ in draws) for task in outcomes.task_ids]) / len(draws)
    np.testing.assert_allclose(frequency, chance / chance.sum(), atol=0.01)
    assert all(expected == pytest.approx(chance[outcomes.task_ids.index(tasks[0])]) for tasks, expected in draws)
    # Distinct while there are enough tasks, with replacement beyond; groups of one cannot be mixed.
    tasks, expected = outcomes.draw(rng, 4, 4)
    assert sorted(tasks) == sorted(outcomes.task_ids) and expected == pytest.approx(chance.mean())
    assert len(outcomes.draw(rng, 9, 4)[0]) == 9
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        outcomes.draw(rng, 1, 1)


def test_outcomes_state_round_trips_and_refuses_another_task_list():
    outcomes = TaskOutcomes(["a", "b"])
    outcomes.record([("b", True), ("b", False)])
    restored = TaskOutcomes(["a", "b"])
    restored.load_state(outcomes.state())
    assert restored.state() == {"wins": [0, 1], "plays": [0, 2]}
    with pytest.raises(ValueError, match="cover 2 tasks, the config lists 3"):
        TaskOutcomes(["a", "b", "c"]).load_state(outcomes.state())


def test_sampling_problems_name_the_setting():
    assert sampling_problem("uniform", 1) is None and sampling_problem("informative", 2) is None
    assert "must be one of ['uniform', 'informative'], got 'hard'" in sampling_problem("hard", 4)
    assert "group_size must be >= 2, got 1" in sampling_problem("informative", 1)

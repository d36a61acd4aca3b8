"""Group advantages, token batches and group-aware sharding (no Ray cluster needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rllib_proxmo.advantages import AdvantageConfig, compute_advantages
from rllib_proxmo.algorithm.group_advantages import GroupAdvantages
from rllib_proxmo.algorithm.sharding import shard_by_group
from rllib_proxmo.algorithm.token_batch import ADVANTAGES, RESPONSE_MASK, pad_turns
from rllib_proxmo.algorithm.torch.llm_rl_module import ATTENTION_MASK, INPUT_IDS
from rllib_proxmo.rollout.episodes import TextEpisode, Turn


def _episode(
    group: str,
    number: int,
    rewards: list[float],
    states: list[str],
    won: bool,
    prompt_len: int = 3,
    penalties: list[float] | None = None,
):
    penalties = penalties or [0.0] * len(rewards)
    turns = [
        Turn(prompt_ids=tuple(range(1, prompt_len + 1)), response_ids=(7,) * (t + 1), reward=r, state=s, penalty=c)
        for t, (r, s, c) in enumerate(zip(rewards, states, penalties))
    ]
    return TextEpisode(f"{group}-{number}", group, group, "pick", turns, won=won)


def _batch() -> list[TextEpisode]:
    return [
        _episode("a", 0, [0.0, 1.0], ["kitchen", "table with mug"], True),
        _episode("a", 1, [0.0, 0.0, 0.0], ["kitchen", "fridge", "fridge open"], False),
        _episode("a", 2, [0.0, 1.0], ["kitchen", "table with mug"], True, penalties=[0.1, 0.0]),
        _episode("b", 0, [0.0], ["garden"], False),
        _episode("b", 1, [0.0, 1.0], ["garden", "shed"], True),
    ]


@pytest.mark.parametrize("estimator", ["proxmo", "grpo", "gigpo", "proxmo_no_psa"])
def test_group_advantages_match_the_core_on_flattened_steps(estimator):
    episodes = _batch()
    GroupAdvantages(AdvantageConfig(estimator=estimator, gamma=0.9)).annotate(episodes)
    group = {"a": 0, "b": 1}
    rows = [
        (group[e.group_id], n, t, turn.reward, turn.state, e.won, turn.penalty)
        for n, e in enumerate(episodes)
        for t, turn in enumerate(e.turns)
    ]
    g, ep, t, r, s, won, penalty = map(list, zip(*rows))
    expected = compute_advantages(
        np.array(g),
        np.array(ep),
        np.array(t),
        np.array(r),
        s,
        np.array(won),
        penalty=penalty,
        estimator=estimator,
        gamma=0.9,
    )
    got = [turn.advantage for e in episodes for turn in e.turns]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.std(got) > 0


def test_group_advantages_apply_turn_penalty_to_its_turn_only():
    # An all-fail group: no episode or step signal, so only the invalid turn (penalty 0.1) moves.
    episodes = [
        _episode("a", 0, [0.0, 0.0], ["kitchen", "fridge"], False),
        _episode("a", 1, [0.0, 0.0], ["kitchen", "fridge"], False, penalties=[0.0, 0.1]),
        _episode("a", 2, [0.0, 0.0], ["kitchen", "fridge"], False),
    ]
    diagnostics = GroupAdvantages(AdvantageConfig()).annotate(episodes)
    assert [[turn.advantage for turn in e.turns] for e in episodes] == [[0.0, 0.0], [0.0, -0.1], [0.0, 0.0]]
    assert diagnostics["invalid_penalty_step_fraction"] == pytest.approx(1 / 6)


def test_group_advantages_reject_bad_input():
    with pytest.raises(TypeError, match="unexpected keyword argument 'lam'"):
        AdvantageConfig(lam=0.5)
    with pytest.raises(TypeError, match="needs an AdvantageConfig"):
        GroupAdvantages({"tau": 0.1})
    with pytest.raises(ValueError, match="no turns"):
        GroupAdvantages(AdvantageConfig()).annotate([TextEpisode("e", "g", "t", "pick")])
    with pytest.raises(ValueError, match="no episodes"):
        GroupAdvantages(AdvantageConfig()).annotate([])


def test_pad_turns_left_pads_and_broadcasts_step_advantage_to_response_tokens():
    episodes = _batch()
    GroupAdvantages(AdvantageConfig()).annotate(episodes)
    columns = pad_turns(episodes, pad_token_id=0)
    turns = sorted((t for e in episodes for t in e.turns), key=lambda t: len(t.prompt_ids) + len(t.response_ids))
    assert columns[INPUT_IDS].shape == (len(turns), 6)
    for row, turn in enumerate(turns):
        length = len(turn.prompt_ids) + len(turn.response_ids)
        np.testing.assert_array_equal(columns[INPUT_IDS][row, -length:], turn.prompt_ids + turn.response_ids)
        assert columns[ATTENTION_MASK][row].sum() == length and columns[ATTENTION_MASK][row, -length:].all()
        response = columns[RESPONSE_MASK][row] == 1
        assert response.sum() == len(turn.response_ids) and response[-len(turn.response_ids) :].all()
        np.testing.assert_allclose(columns[ADVANTAGES][row][response], turn.advantage, rtol=1e-6)
        assert not columns[ADVANTAGES][row][~response].any()


def test_pad_turns_refuses_turns_without_advantage():
    with pytest.raises(ValueError, match="GroupAdvantages"):
        pad_turns(_batch(), pad_token_id=0)


def test_shard_by_group_keeps_groups_whole_and_balances_tokens():
    episodes = []
    for g in range(7):
        for n in range(3):
            episodes.append(_episode(f"g{g}", n, [0.0] * (1 + g % 3), ["s"] * (1 + g % 3), False, prompt_len=10 + g))
    shards = shard_by_group(episodes, 3)
    assert sorted(e.episode_id for s in shards for e in s) == sorted(e.episode_id for e in episodes)
    owner = {}
    for index, shard in enumerate(shards):
        for episode in shard:
            assert owner.setdefault(episode.group_id, index) == index
    loads = [sum(e.num_tokens for e in shard) for shard in shards]
    biggest_group = max(sum(e.num_tokens for e in episodes if e.group_id == f"g{g}") for g in range(7))
    assert max(loads) - min(loads) <= biggest_group
    assert shard_by_group(episodes, 3) == shards


def test_shard_by_group_refuses_more_learners_than_groups():
    with pytest.raises(ValueError, match="cannot feed 3 learners"):
        shard_by_group(_batch(), 3)


def test_turn_advantage_starts_unset():
    assert math.isnan(Turn((1,), (2,), 0.0, "s").advantage)

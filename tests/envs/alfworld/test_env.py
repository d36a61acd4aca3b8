"""``ALFWorld-v0``: the Gymnasium contract, the expert, task pinning, no-ops and truncation."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers ALFWorld-v0)
from envs.alfworld.env import ALFWorldEnv, task_sentence
from envs.alfworld.expert import natural_key
from envs.alfworld.tasks import TASK_TYPES
from envs.spaces import TextSpace

INFO_KEYS = {"won", "admissible_actions", "task_id", "task_type", "task", "state", "step", "memory", "inventory"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """The generated-games cache all ALFWorld test modules of the session share."""
    return tmp_path_factory.getbasetemp() / "alfworld-cache"


@pytest.fixture(scope="module")
def env(cache_dir) -> ALFWorldEnv:
    """One training game of each task type, with the expert."""
    environment = ALFWorldEnv(split="train", num_games=6, cache_dir=cache_dir, expert="oracle")
    yield environment
    environment.close()


def follow_expert(env: ALFWorldEnv, info: dict) -> tuple[list[float], dict, bool, bool]:
    rewards = []
    while True:
        _, reward, terminated, truncated, info = env.step(info["expert_action"])
        rewards.append(reward)
        if terminated or truncated:
            return rewards, info, terminated, truncated


def test_registered_with_text_spaces(cache_dir):
    made = gym.make("ALFWorld-v0", num_games=6, cache_dir=cache_dir)
    try:
        base = made.unwrapped
        assert isinstance(base, ALFWorldEnv)
        assert isinstance(base.observation_space, TextSpace) and isinstance(base.action_space, TextSpace)
        assert base.noop_action == "" and base.action_space.contains(base.noop_action)
        assert base.action_space.contains("go to cabinet 1 — café 👍\n")
        observation, info = made.reset(seed=0)
        assert base.observation_space.contains(observation)
        assert set(info) == INFO_KEYS
    finally:
        made.close()


def test_following_the_expert_wins_every_task_type(env):
    assert sorted({task_id.split("/")[-1].split("-")[0] for task_id in env.task_ids}) == sorted(TASK_TYPES)
    for task_id in env.task_ids:
        observation, info = env.reset(options={"task_id": task_id})
        assert set(info) == INFO_KEYS | {"expert_action"}
        assert info["task_id"] == task_id and info["step"] == 0 and not info["won"]
        assert info["state"] == observation and observation.startswith("-= Welcome to TextWorld, ALFRED! =-")
        assert info["task"] == task_sentence(observation) and info["task"].endswith(".")
        assert info["expert_action"] in info["admissible_actions"]

        rewards, info, terminated, truncated = follow_expert(env, info)
        assert terminated and not truncated and info["won"], task_id
        assert rewards[-1] == 1.0 and sum(rewards) == 1.0
        assert info["task_type"] == task_id.split("/")[-1].split("-")[0]
        assert info["expert_action"] is None and info["step"] == len(rewards)
    assert env.expert_failures == 0


def test_stock_engine_plays_the_same_episode(cache_dir, env):
    task_id = next(task_id for task_id in env.task_ids if "pick2" in task_id)
    episodes = []
    for fast_engine in (True, False):
        player = ALFWorldEnv(num_games=6, cache_dir=cache_dir, expert="oracle", fast_engine=fast_engine)
        try:
            observation, info = player.reset(options={"task_id": task_id})
            transcript = [(observation, info)]
            while not info["won"]:
                observation, reward, _, _, info = player.step(info["expert_action"])
                transcript.append((observation, reward, info))
            episodes.append(transcript)
        finally:
            player.close()
    assert episodes[0] == episodes[1]


@pytest.mark.parametrize(("expert_fixture", "seed", "detours"), [("env", 0, 8), ("searching_env", 1, 6)])
def test_expert_recovers_from_random_detours(request, expert_fixture, seed, detours):
    expert_env = request.getfixturevalue(expert_fixture)
    rng = np.random.default_rng(seed)
    for task_id in expert_env.task_ids:
        _, info = expert_env.reset(options={"task_id": task_id})
        for _ in range(detours):
            _, _, terminated, _, info = expert_env.step(str(rng.choice(info["admissible_actions"])))
            if terminated:
                break
        else:
            _, info, terminated, _ = follow_expert(expert_env, info)
        assert terminated and info["won"], task_id
    assert expert_env.expert_failures == 0


@pytest.fixture(scope="module")
def searching_env(cache_dir) -> ALFWorldEnv:
    """The same games as ``env``, with the expert that searches."""
    environment = ALFWorldEnv(split="train", num_games=6, cache_dir=cache_dir, expert="search")
    yield environment
    environment.close()


def test_searching_expert_wins_every_task_type_using_only_what_the_agent_saw(searching_env):
    for task_id in searching_env.task_ids:
        observation, info = searching_env.reset(options={"task_id": task_id})
        seen = observation
        while info["expert_action"] is not None:
            command = info["expert_action"]
            assert command in info["admissible_actions"], (task_id, command)
            verb, *words = command.split()
            if verb in ("take", "use"):
                # The object (or lamp) was in the text of an earlier observation: nothing known beforehand.
                assert " ".join(words[:2]) in seen, (task_id, command)
            observation, _, terminated, truncated, info = searching_env.step(command)
            seen += observation
            assert not truncated
        assert terminated and info["won"], task_id
    assert searching_env.expert_failures == 0


def test_searching_expert_looks_where_the_oracle_need_not(env, searching_env):
    """The oracle walks straight to the object; the searcher sweeps the eligible receptacles in name order."""
    lengths = {}
    for expert_env in (env, searching_env):
        steps = 0
        for task_id in expert_env.task_ids:
            _, info = expert_env.reset(options={"task_id": task_id})
            steps += len(follow_expert(expert_env, info)[0])
        lengths[expert_env.expert] = steps
    assert lengths["search"] > lengths["oracle"]


def test_unknown_expert_is_refused(cache_dir):
    with pytest.raises(ValueError, match=r"expert must be None or one of \['oracle', 'search'\], got True"):
        ALFWorldEnv(num_games=6, cache_dir=cache_dir, expert=True)


@pytest.mark.parametrize("noop", ["", "fly to the moon", "   ", "go to the kitchen"])
def test_unknown_commands_change_nothing_but_count_as_steps(env, noop):
    task_id = env.task_ids[2]
    _, start = env.reset(options={"task_id": task_id})
    walkthrough_length = len(follow_expert(env, start)[0])

    _, info = env.reset(options={"task_id": task_id})
    for step in (1, 2):
        observation, reward, terminated, truncated, info = env.step(noop)
        assert observation == "Nothing happens." and info["state"] == observation
        assert (reward, terminated, truncated, info["step"]) == (0.0, False, False, step)
        assert info["admissible_actions"] == start["admissible_actions"]
        assert info["expert_action"] == start["expert_action"]
    rewards, info, terminated, _ = follow_expert(env, info)
    assert terminated and len(rewards) == walkthrough_length


def test_truncation_at_max_steps_and_no_step_after_the_end(cache_dir):
    env = ALFWorldEnv(num_games=6, cache_dir=cache_dir, max_steps=3)
    try:
        env.reset(seed=1)
        outcomes = [env.step("look")[2:4] for _ in range(3)]
        assert outcomes == [(False, False), (False, False), (False, True)]
        with pytest.raises(RuntimeError, match="call reset"):
            env.step("look")
    finally:
        env.close()


def test_task_id_pins_the_same_initial_state_in_every_env(cache_dir, env):
    task_id = env.task_ids[4]
    group = [ALFWorldEnv(num_games=6, cache_dir=cache_dir) for _ in range(2)]
    try:
        starts = [member.reset(seed=seed, options={"task_id": task_id}) for seed, member in enumerate(group)]
        (obs_a, info_a), (obs_b, info_b) = starts
        assert obs_a == obs_b and info_a == info_b and info_a["task_id"] == task_id
    finally:
        for member in group:
            member.close()


def test_seed_picks_the_game_deterministically(cache_dir, env):
    other = ALFWorldEnv(num_games=6, cache_dir=cache_dir)
    try:
        picks = [env.reset(seed=seed)[1]["task_id"] for seed in range(4)]
        assert [other.reset(seed=seed)[1]["task_id"] for seed in range(4)] == picks
        assert len(set(picks)) > 1
    finally:
        other.close()


def test_queued_tasks_are_played_in_order(env):
    wanted = [env.task_ids[3], env.task_ids[0]]
    env.queue_tasks(wanted)
    assert [env.reset()[1]["task_id"] for _ in wanted] == wanted
    with pytest.raises(ValueError, match="unknown task_id"):
        env.queue_tasks(["train/seed0/pick-9999"])


def test_task_type_subset(cache_dir):
    env = ALFWorldEnv(num_games=1, task_types=["heat"], cache_dir=cache_dir)
    try:
        assert env.task_ids == ["train/seed0/heat-0000"]
        assert env.reset(seed=0)[1]["task_type"] == "heat"
    finally:
        env.close()


def test_bad_calls_are_rejected(env):
    with pytest.raises(ValueError, match="unknown task_id"):
        env.reset(options={"task_id": "train/seed0/look-4242"})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"game": 3})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="command strings"):
        env.step(3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_steps": 0}, ValueError, "max_steps"),
        ({"split": "valid_unseen"}, ValueError, "unknown generated split"),
        ({"data_source": "webshop"}, ValueError, "unknown ALFWorld data_source"),
        ({"task_types": ["pick", "slice"]}, ValueError, "unknown ALFWorld task type"),
    ],
)
def test_bad_configs_are_rejected(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        ALFWorldEnv(cache_dir=tmp_path, num_games=1, **kwargs)


def test_step_before_reset_is_rejected(cache_dir):
    env = ALFWorldEnv(num_games=6, cache_dir=cache_dir)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("look")


_SEEN_ENTRY = re.compile(r"([a-z]+ \d+) \(([^)]*)\)")


def _memory(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """``info["memory"]`` read back: {receptacle: objects} seen, and the receptacles not yet seen."""
    seen_line, unseen_line = text.split("\n")
    assert seen_line.startswith("Seen: ") and unseen_line.startswith("Not yet seen: ")
    seen = {
        receptacle: [] if objects == "nothing" else objects.split(", ")
        for receptacle, objects in _SEEN_ENTRY.findall(seen_line)
    }
    unseen = unseen_line.removeprefix("Not yet seen: ").rstrip(".")
    return seen, [] if unseen == "nothing" else unseen.split(", ")


def _listed(text: str) -> list[str]:
    """The names of an observation's ``"you see a x 1, a y 2, and a z 3"`` list."""
    return [] if text == "nothing" else [item.removeprefix("and ").removeprefix("a ") for item in text.split(", ")]


def test_the_memory_and_the_inventory_hold_what_the_observations_showed(cache_dir):
    env = ALFWorldEnv(split="train", num_games=6, cache_dir=cache_dir, expert="search", max_steps=30)
    checked = {"shown": 0, "closed": 0, "taken": 0, "put": 0}
    try:
        for task_id in env.task_ids:
            observation, info = env.reset(options={"task_id": task_id})
            room = set(_listed(re.search(r"you see (.*?)\.\n", observation).group(1)))
            assert _memory(info["memory"]) == ({}, sorted(room, key=natural_key)) and info["inventory"] == "nothing"
            carried = "nothing"
            previously_seen: dict[str, list[str]] = {}
            done = False
            while not done:
                observation, _, terminated, truncated, info = env.step(info["expert_action"])
                done = terminated or truncated
                seen, unseen = _memory(info["memory"])
                assert set(seen) | set(unseen) == room and not set(seen) & set(unseen)
                assert list(seen)[: len(previously_seen)] == list(previously_seen)  # first-seen order
                shown = re.search(
                    r"(?:On the ([a-z]+ \d+)|The ([a-z]+ \d+) is open\. In it), you see (.*)\.$", observation
                )
                if shown:  # the receptacle the agent looks into now: exactly what the observation lists
                    receptacle = shown.group(1) or shown.group(2)
                    assert seen[receptacle] == sorted(_listed(shown.group(3)), key=natural_key)
                    checked["shown"] += 1
                closed = re.search(r"The ([a-z]+ \d+) is closed\.$", observation)
                if closed and closed.group(1) not in previously_seen:
                    assert closed.group(1) in unseen
                    checked["closed"] += 1
                taken = re.match(r"You pick up the ([a-z]+ \d+) from the ([a-z]+ \d+)\.$", observation)
                if taken:
                    assert taken.group(1) not in seen[taken.group(2)]
                    assert set(seen[taken.group(2)]) == set(previously_seen[taken.group(2)]) - {taken.group(1)}
                    assert info["inventory"] == taken.group(1)
                    checked["taken"] += 1
                    carried = taken.group(1)
                put = re.match(r"You (?:move|put) the ([a-z]+ \d+) (?:to|in|on) the ([a-z]+ \d+)\.$", observation)
                if put:
                    assert put.group(1) == carried and info["inventory"] == "nothing"
                    checked["put"] += 1
                    carried = "nothing"
                assert info["inventory"] == carried
                previously_seen = seen
            assert info["won"], task_id
    finally:
        env.close()
    assert min(checked.values()) >= 3, checked


def test_the_stock_engine_keeps_the_same_memory_and_inventory(cache_dir):
    fast, stock = (
        ALFWorldEnv(
            split="train", num_games=6, cache_dir=cache_dir, expert="search", task_types=["look"], fast_engine=f
        )
        for f in (True, False)
    )
    try:
        _, info = fast.reset(seed=0)
        _, stock_info = stock.reset(options={"task_id": info["task_id"]})
        kept = [((info["memory"], info["inventory"]), (stock_info["memory"], stock_info["inventory"]))]
        while not info["won"]:
            action = info["expert_action"]
            *_, info = fast.step(action)
            *_, stock_info = stock.step(action)
            kept.append(((info["memory"], info["inventory"]), (stock_info["memory"], stock_info["inventory"])))
        assert all(a == b for a, b in kept) and len({a for a, _ in kept}) > 2
        assert len({inventory for (_, inventory), _ in kept}) == 2  # empty hands, then the task's object
    finally:
        fast.close()
        stock.close()

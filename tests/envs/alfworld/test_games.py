"""The game catalogue: generated games in the cache, and ALFWorld's own data read as ALFWorld reads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from envs.alfworld.env import ALFWorldEnv
from envs.alfworld.games import ALFWORLD_DATA_ENV_VAR, alfworld_games, generated_games, load_games
from envs.alfworld.generate import CACHE_ENV_VAR, default_cache_dir
from envs.alfworld.problem import GAME_FILE, TRAJ_DATA_FILE
from envs.alfworld.tasks import TASK_TYPES


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """The generated-games cache all ALFWorld test modules of the session share."""
    return tmp_path_factory.getbasetemp() / "alfworld-cache"


@pytest.fixture(scope="module")
def generated(cache_dir):
    return generated_games("train", num_games=6, seed=0, cache_dir=cache_dir)


def add_trial(split_dir: Path, task_dir: str, source: Path, *, solvable: bool = True, game: bool = True) -> None:
    """Copy a generated game into ALFWorld's layout ``<split>/<task dir>/trial_*/``."""
    trial = split_dir / task_dir / f"trial_T2019_{len(list(split_dir.rglob('trial_*'))):04d}"
    trial.mkdir(parents=True)
    shutil.copy(source / TRAJ_DATA_FILE, trial / TRAJ_DATA_FILE)
    if game:
        data = json.loads((source / GAME_FILE).read_text())
        data["solvable"] = solvable
        (trial / GAME_FILE).write_text(json.dumps(data))


@pytest.fixture(scope="module")
def alfworld_data(tmp_path_factory, generated) -> Path:
    """A small ``$ALFWORLD_DATA`` in ALFWorld's real layout, with games ALFWorld's filter drops."""
    root = tmp_path_factory.mktemp("alfworld_data")
    by_type = {entry.task.task_type: entry.game_file.parent for entry in generated}
    unseen = root / "json_2.1.1" / "valid_unseen"
    for task_type, source in by_type.items():
        task = json.loads((source / TRAJ_DATA_FILE).read_text())["pddl_params"]
        add_trial(unseen, f"{TASK_TYPES[task_type]}-{task['object_target']}-None-{task['parent_target']}-7", source)
    add_trial(unseen, "pick_and_place_with_movable_recep-Apple-Bowl-Fridge-7", by_type["pick"])
    add_trial(unseen, "pick_heat_then_place_in_recep-AppleSliced-None-Fridge-7", by_type["heat"])
    add_trial(unseen, "pick_cool_then_place_in_recep-Apple-None-Fridge-8", by_type["cool"], solvable=False)
    add_trial(unseen, "pick_clean_then_place_in_recep-Mug-None-Cabinet-8", by_type["clean"], game=False)
    (root / "json_2.1.1" / "valid_seen").mkdir()
    return root


def test_generated_games_have_stable_ids_and_their_tasks(generated):
    assert [entry.task_id for entry in generated] == [f"train/seed0/{task_type}-0000" for task_type in TASK_TYPES]
    for entry in generated:
        traj = json.loads((entry.game_file.parent / TRAJ_DATA_FILE).read_text())
        assert entry.task.task_type == entry.task_id.split("/")[-1].split("-")[0]
        assert entry.task.alfred_task_type == traj["task_type"]
        assert entry.task.object_target == traj["pddl_params"]["object_target"]


def test_cache_directory_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert default_cache_dir() == Path.home() / ".cache" / "rllib_proxmo" / "alfworld"


def test_alfworld_data_is_filtered_like_alfworld(alfworld_data):
    games = alfworld_games("unseen", alfworld_data)
    assert sorted(entry.task.task_type for entry in games) == sorted(TASK_TYPES)
    for entry in games:
        assert entry.task_id.startswith("valid_unseen/") and entry.task_id.endswith(entry.game_file.parent.name)
        assert "movable" not in entry.task_id and "Sliced" not in entry.task_id
    assert [entry.task_id for entry in alfworld_games("unseen", alfworld_data)] == [e.task_id for e in games]


def test_alfworld_data_task_types_and_count(alfworld_data, monkeypatch):
    monkeypatch.setenv(ALFWORLD_DATA_ENV_VAR, str(alfworld_data))
    heat_and_look = load_games("alfworld", "unseen", num_games=None, task_types=["look", "heat"])
    assert sorted(entry.task.task_type for entry in heat_and_look) == ["heat", "look"]
    assert len(alfworld_games("unseen", num_games=2)) == 2


def test_env_plays_alfworld_data_with_the_expert(alfworld_data):
    env = ALFWorldEnv(split="unseen", data_source="alfworld", data_dir=alfworld_data, expert="oracle")
    try:
        task_id = next(t for t in env.task_ids if "pick_two_obj" in t)
        _, info = env.reset(options={"task_id": task_id})
        assert info["task_type"] == "pick2"
        while not info["won"]:
            _, reward, terminated, truncated, info = env.step(info["expert_action"])
            assert not truncated
        assert terminated and reward == 1.0
    finally:
        env.close()


def test_missing_alfworld_data_is_reported(tmp_path, monkeypatch, alfworld_data):
    monkeypatch.delenv(ALFWORLD_DATA_ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=ALFWORLD_DATA_ENV_VAR):
        alfworld_games("unseen")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        alfworld_games("unseen", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="valid_unseen"):
        alfworld_games("unseen", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ALFWorldEnv(split="unseen", data_source="alfworld", data_dir=tmp_path / "nowhere")


def test_empty_alfworld_split_is_reported(alfworld_data):
    with pytest.raises(ValueError, match="no playable ALFWorld game"):
        alfworld_games("seen", alfworld_data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "valid_unseen"}, "unknown ALFWorld split"),
        ({"split": "unseen", "task_types": ["slice"]}, "unknown ALFWorld task type"),
        ({"split": "unseen", "num_games": 0}, "num_games must be at least 1"),
    ],
)
def test_bad_alfworld_arguments_are_rejected(alfworld_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        alfworld_games(data_dir=alfworld_data, **kwargs)


def test_unknown_source_is_rejected():
    with pytest.raises(ValueError, match="unknown ALFWorld data_source"):
        load_games("download", "train", num_games=1)

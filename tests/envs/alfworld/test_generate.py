"""Generated ALFWorld games: all six task types won on the real engine, deterministic, disjoint splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.alfworld.engine import make_engine
from envs.alfworld.generate import (
    GenerationStats,
    VerificationError,
    generate_games,
    generated_root,
    main,
    verify_game,
)
from envs.alfworld.problem import GAME_FILE, GOAL_PLACEHOLDER, TRAJ_DATA_FILE, alfworld_domain
from envs.alfworld.scenes import HELD_OUT_SCENES, TRAINING_SCENES
from envs.alfworld.tasks import TASK_TYPES, TaskSpec

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def games_root(tmp_path_factory) -> Path:
    """Generated games in the cache all ALFWorld test modules of the session share (games are reused)."""
    return generated_root(tmp_path_factory.getbasetemp() / "alfworld-cache")


@pytest.fixture(scope="module")
def train_games(games_root) -> list[Path]:
    """One verified training game of each task type."""
    return generate_games(games_root, "train", num_games=6, seed=0)


def read_game(game_file: Path) -> tuple[dict, dict]:
    return json.loads(game_file.read_text()), json.loads((game_file.parent / TRAJ_DATA_FILE).read_text())


@pytest.mark.slow
def test_every_task_type_is_won_by_its_stored_walkthrough_on_the_stock_engine(train_games):
    assert [path.parent.name for path in train_games] == [f"{task_type}-0000" for task_type in TASK_TYPES]
    engine = make_engine(train_games[0], fast=False)
    for game_file in train_games:
        game, traj = read_game(game_file)
        assert traj["task_type"] == TASK_TYPES[game_file.parent.name.split("-")[0]]
        assert game["solvable"] is True and game["walkthrough"]
        engine.load(str(game_file))
        state = engine.reset()
        for command in game["walkthrough"]:
            assert not state["won"]
            assert command in state["admissible_commands"], (game_file, command)
            state, _, _ = engine.step(command)
        assert state["won"], game_file


def test_game_files_are_in_alfworld_format(train_games):
    for game_file in train_games:
        game, traj = read_game(game_file)
        assert set(game) == {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"}
        assert game["pddl_domain"] == alfworld_domain()
        task = TaskSpec.from_traj_data(traj)
        sentence = traj["turk_annotations"]["anns"][0]["task_desc"]
        assert sentence in task.sentence_templates()
        assert f"Your task is to: {sentence}." in game["grammar"] and GOAL_PLACEHOLDER not in game["grammar"]
        assert game["pddl_problem"].startswith("(define (problem ") and "(:goal" in game["pddl_problem"]
        assert set(traj["pddl_params"]) == {
            "object_target",
            "parent_target",
            "toggle_target",
            "mrecep_target",
            "object_sliced",
        }
        assert traj["scene"]["scene_num"] in TRAINING_SCENES


@pytest.mark.slow
def test_unseen_split_uses_only_held_out_rooms(games_root, train_games):
    stats = GenerationStats()
    unseen = generate_games(games_root, "unseen", num_games=6, seed=0, stats=stats)
    assert {**stats.generated, **stats.reused}.keys() == set(TASK_TYPES)
    unseen_rooms = {read_game(path)[1]["scene"]["scene_num"] for path in unseen}
    train_rooms = {read_game(path)[1]["scene"]["scene_num"] for path in train_games}
    assert unseen_rooms <= set(HELD_OUT_SCENES)
    assert train_rooms <= set(TRAINING_SCENES)
    assert not {path.parent for path in unseen} & {path.parent for path in train_games}


def test_generation_is_deterministic_across_processes_and_subsets(games_root, train_games, tmp_path):
    """Another process with another hash seed, asking for two task types only, writes the same bytes."""
    script = (
        "import sys; from envs.alfworld.generate import generate_games; "
        "generate_games(sys.argv[1], 'train', num_games=2, seed=0, task_types=['pick2', 'look'])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO_ROOT, env=env, timeout=300)
    for name in ("look-0000", "pick2-0000"):
        for file_name in (GAME_FILE, TRAJ_DATA_FILE):
            again = tmp_path / "train" / "seed0" / name / file_name
            assert again.read_bytes() == (games_root / "train" / "seed0" / name / file_name).read_bytes()


def test_another_seed_gives_another_game(games_root, train_games):
    other = generate_games(games_root, "train", num_games=1, seed=1)
    assert read_game(other[0])[0]["pddl_problem"] != read_game(train_games[0])[0]["pddl_problem"]


def test_existing_games_are_reused(games_root, train_games):
    stats = GenerationStats()
    again = generate_games(games_root, "train", num_games=6, seed=0, stats=stats)
    assert again == train_games
    assert stats.generated == {} and sum(stats.reused.values()) == 6


def test_verification_rejects_a_walkthrough_for_another_goal(train_games):
    pick_game = train_games[0]
    task = TaskSpec.from_traj_data(read_game(pick_game)[1])
    engine = make_engine(pick_game, fast=False)
    assert verify_game(engine, pick_game, task)
    other_parent = "GarbageCan" if task.parent_target != "GarbageCan" else "CounterTop"
    with pytest.raises(VerificationError):
        verify_game(engine, pick_game, TaskSpec("pick", task.object_target, parent_target=other_parent))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "valid_unseen", "num_games": 1}, "unknown generated split"),
        ({"split": "train", "num_games": 0}, "num_games must be at least 1"),
        ({"split": "train", "num_games": 1, "task_types": ["slice"]}, "unknown ALFWorld task type"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_games(tmp_path, seed=0, **kwargs)
    assert not any(tmp_path.iterdir())


def test_command_line_reports_the_set(games_root, train_games, capsys):
    main(["--split", "train", "--num-games", "6", "--seed", "0", "--out", str(games_root)])
    printed = capsys.readouterr().out
    assert f"6 games in {games_root / 'train' / 'seed0'}" in printed
    assert "generated 0, reused 6" in printed

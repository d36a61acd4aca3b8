"""Tests of the logged-rollout file format (rllib_proxmo.analysis.rollout_files)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rllib_proxmo.analysis.rollout_files import iteration_file, load_rollouts, save_rollouts


def rollout_columns(iteration: int = 0) -> dict[str, object]:
    """Two episodes of one group: a 2-step success and a 1-step failure."""
    return {
        "group_id": np.array([0, 0, 0]),
        "episode_id": np.array([0, 0, 1]),
        "t": np.array([0, 1, 0]),
        "reward": np.array([0.0, 1.0, 0.0]),
        "state": ["You are in the kitchen.", "You see a mug 1.", "You are in the kitchen."],
        "success": np.array([True, True, False]),
        "task_id": ["task-7"] * 3,
        "task_type": ["pick"] * 3,
        "iteration": np.full(3, iteration),
    }


def test_round_trip_keeps_values_and_types(tmp_path):
    columns = rollout_columns()
    columns["action"] = ["go to kitchen", "take mug 1", "look"]  # an extra column travels along
    loaded = load_rollouts(save_rollouts(tmp_path / "steps.parquet", columns))
    assert set(loaded) == set(columns)
    for name, values in columns.items():
        if isinstance(values, list):
            assert loaded[name] == values
        else:
            np.testing.assert_array_equal(loaded[name], values)
            assert loaded[name].dtype == values.dtype
    assert loaded["t"].dtype == np.int64 and loaded["success"].dtype == bool


def test_directory_of_iterations_is_concatenated_in_name_order(tmp_path):
    for iteration in (1, 0):
        save_rollouts(iteration_file(tmp_path, iteration), rollout_columns(iteration))
    loaded = load_rollouts(tmp_path)
    np.testing.assert_array_equal(loaded["iteration"], [0, 0, 0, 1, 1, 1])
    assert iteration_file(tmp_path, 42).name == "iteration_000042.parquet"


def test_missing_column_on_load_is_named(tmp_path):
    columns = rollout_columns()
    table = pa.table({name: values for name, values in columns.items() if name not in ("task_type", "reward")})
    pq.write_table(table, tmp_path / "old.parquet")
    with pytest.raises(ValueError, match=r"old\.parquet.*missing rollout column\(s\) \['reward', 'task_type'\]"):
        load_rollouts(tmp_path / "old.parquet")


def test_missing_column_on_save_is_named(tmp_path):
    columns = rollout_columns()
    del columns["success"]
    with pytest.raises(ValueError, match=r"missing rollout column\(s\) \['success'\]"):
        save_rollouts(tmp_path / "x.parquet", columns)


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("t", np.array([0.0, 0.5, 0.0]), "cannot be stored as int64"),
        ("state", ["a", 3, "b"], "must hold strings; row 1 is int"),
        ("success", np.array([0, 2, 1]), "must be binary"),
        ("reward", np.array([0.0, np.nan, 1.0]), "NaN or infinite"),
        ("reward", np.array(["0", "1", "0"]), "rollout column 'reward' must be numeric"),
        ("episode_id", np.array([0, None, 1], dtype=object), "missing values"),
    ],
)
def test_bad_values_are_refused_on_save(tmp_path, name, values, message):
    columns = {**rollout_columns(), name: values}
    with pytest.raises(ValueError, match=message):
        save_rollouts(tmp_path / "x.parquet", columns)


def test_unequal_lengths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="differ in length"):
        save_rollouts(tmp_path / "x.parquet", {**rollout_columns(), "t": np.array([0, 1])})


def test_wrong_stored_type_is_refused_on_load(tmp_path):
    table = pa.table({**rollout_columns(), "t": pa.array([0.0, 1.0, 0.0])})
    pq.write_table(table, tmp_path / "float_t.parquet")
    with pytest.raises(ValueError, match=r"unexpected types: \{'t': 'double'\}"):
        load_rollouts(tmp_path / "float_t.parquet")


def test_missing_paths_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no rollouts at"):
        load_rollouts(tmp_path / "nowhere.parquet")
    with pytest.raises(FileNotFoundError, match=r"holds no \*\.parquet file"):
        load_rollouts(tmp_path)

"""On-disk format of logged rollouts: one Parquet row per environment step.

A training run saves the steps of every iteration so that the credit assignment
can be studied and tuned afterwards without new rollouts (see
:mod:`rllib_proxmo.analysis.psa_regression`). Parquet is written with ``pyarrow``, which
``ray[tune]`` already requires.

Columns (:data:`ROLLOUT_COLUMNS`), one value per step:

==============  =======  =========================================================
column          type     meaning
==============  =======  =========================================================
``group_id``    int64    task group (the N rollouts of one task) within its iteration
``episode_id``  int64    episode within its iteration
``t``           int64    0-based step index inside the episode
``reward``      float64  immediate reward r_t
``state``       string   the environment's raw observation text before acting at t
``success``     bool     whether the step's episode succeeded
``task_id``     string   identifier of the task the group played
``task_type``   string   task family (ALFWorld: pick, look, clean, heat, cool, pick2)
``iteration``   int64    training iteration that produced the step
==============  =======  =========================================================

Groups and episodes are identified by ``(iteration, group_id)`` and
``(iteration, episode_id)``, so every iteration may number them from 0. Extra
columns are stored and loaded as they are; a training run
(:func:`rllib_proxmo.rollout.episodes.step_columns`) adds ``penalty`` (float64: the
invalid-action penalty), ``action`` (string: what the agent did, the parsed command or
else its response text), ``admissible`` (bool: the env's ``info["action_admissible"]``,
True where the env reports none) and ``advantage`` (float64: the step's advantage, as
the learner used it).

A path is either one ``.parquet`` file or a directory whose ``*.parquet`` files
(e.g. one per iteration, named by :func:`iteration_file`) are read in name
order and concatenated.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rllib_proxmo.advantages.batch import as_binary_column, as_finite_column, as_text_column

__all__ = ["ROLLOUT_COLUMNS", "iteration_file", "load_rollouts", "save_rollouts"]

ROLLOUT_COLUMNS: dict[str, pa.DataType] = {
    "group_id": pa.int64(),
    "episode_id": pa.int64(),
    "t": pa.int64(),
    "reward": pa.float64(),
    "state": pa.string(),
    "success": pa.bool_(),
    "task_id": pa.string(),
    "task_type": pa.string(),
    "iteration": pa.int64(),
}

Rollouts = dict[str, np.ndarray | list[str]]


def iteration_file(directory: str | Path, iteration: int) -> Path:
    """``directory/iteration_000042.parquet``: the file of one iteration in a rollout directory."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return Path(directory) / f"iteration_{iteration:06d}.parquet"


def save_rollouts(path: str | Path, columns: Mapping[str, object]) -> Path:
    """Write one table of steps to a Parquet file (parent directories are created).

    Args:
        path: the file to write (overwritten if it exists).
        columns: every column of :data:`ROLLOUT_COLUMNS` as an array-like of n
            values, plus any extra columns of n values.

    Returns:
        The path written.

    Raises:
        ValueError: a required column is missing, the columns differ in length,
            or a column's values cannot be stored as its type without loss
            (a non-integer ``t``, a non-string ``state``, a ``success`` other
            than bool or 0/1, a NaN or infinite ``reward``, a missing value).
    """
    _check_required(columns.keys(), f"columns to save to {path}")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"rollout columns differ in length: {lengths}")
    arrays = {name: _to_arrow(name, values) for name, values in columns.items()}
    table = pa.table(arrays)
    _check_no_nulls(table, f"columns to save to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def load_rollouts(path: str | Path) -> Rollouts:
    """Read steps saved by :func:`save_rollouts` from a file or a directory of files.

    Returns:
        ``{column: values}``: string columns as ``list[str]``, the others as
        NumPy arrays (int64, float64 or bool), all of the same length n; extra
        columns included.

    Raises:
        FileNotFoundError: the path does not exist, or a directory holds no
            ``*.parquet`` file.
        ValueError: a file lacks required columns (the message names them and
            the file), holds nulls in them, or stores one with another type.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no rollouts at {path}")
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"rollout directory {path} holds no *.parquet file")
    tables = [_read_checked(file) for file in files]
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    return {
        name: column.to_pylist() if pa.types.is_string(column.type) else column.to_numpy()
        for name, column in zip(table.column_names, table.columns)
    }


def _read_checked(file: Path) -> pa.Table:
    try:
        table = pq.read_table(file)
    except pa.ArrowInvalid as error:
        raise ValueError(f"{file} is not a readable Parquet file: {error}") from error
    _check_required(table.column_names, str(file))
    wrong = {
        name: str(table.schema.field(name).type)
        for name, expected in ROLLOUT_COLUMNS.items()
        if table.schema.field(name).type != expected
    }
    if wrong:
        raise ValueError(f"{file} stores rollout columns with unexpected types: {wrong}")
    _check_no_nulls(table, str(file))
    return table.combine_chunks()


def _check_required(names, where: str) -> None:
    missing = [name for name in ROLLOUT_COLUMNS if name not in set(names)]
    if missing:
        raise ValueError(f"{where}: missing rollout column(s) {missing}; required: {list(ROLLOUT_COLUMNS)}")


def _check_no_nulls(table: pa.Table, where: str) -> None:
    nulls = {name: table.column(name).null_count for name in ROLLOUT_COLUMNS if table.column(name).null_count}
    if nulls:
        raise ValueError(f"{where}: rollout columns hold missing values (count per column): {nulls}")


def _to_arrow(name: str, values) -> pa.Array:
    """One column as an Arrow array of its declared type, refusing lossy conversions."""
    expected = ROLLOUT_COLUMNS.get(name)
    if expected is None:
        return pa.array(values)
    label = f"rollout column {name!r}"
    if expected == pa.string():
        return pa.array(as_text_column(label, values), type=expected)
    if expected == pa.bool_():
        return pa.array(as_binary_column(label, values))
    if expected == pa.float64():
        return pa.array(as_finite_column(label, values))
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{label} must be one-dimensional, got shape {array.shape}")
    try:
        return pa.array(array, type=expected)  # a safe cast: 0.5 is not silently stored as the int 0
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise ValueError(f"rollout column {name!r} cannot be stored as {expected}: {error}") from error

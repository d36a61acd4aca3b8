"""MLflow tracking of a training run, the one path of the main job and of every Tune trial.

A run records (see ``docs/design.md``):

- params: the algorithm config, flattened (:func:`flatten_params` of ``config.to_dict()``);
- metrics: every finite number of each training result at step ``training_iteration``
  (:meth:`RunTracker.log_result`), names joined with "/" as in RLlib's result dict
  (``env_runners/success_rate``, ``evaluation/env_runners/success_rate``, ...);
- tags (:func:`run_tags`): estimator, env, model, seed, scale, ``git_commit`` and
  ``mlflow.source.git.commit``, and the credit-assignment settings a grid may sweep;
- artifacts: ``learning_curve.png``, ``evaluation.csv`` / ``evaluation.md``
  (:func:`write_run_files`) and the checkpoint, or its path as the tag
  ``checkpoint_path`` when it is larger than a limit (:meth:`RunTracker.log_checkpoint`);
- status: RUNNING from the start, then FINISHED, FAILED or KILLED (:meth:`RunTracker.finish`).

:class:`RunTracker` wraps one MLflow run through :class:`mlflow.MlflowClient` (no
global ``mlflow`` state, so several runs can live in one process, e.g. Tune
trials). Tracking never stops training: when the store cannot be reached at the
start, or a later call fails, the tracker warns once (``UserWarning`` and the
log), counts the calls it skipped (:attr:`RunTracker.skipped_calls`) and turns
itself off.

The default store is a SQLite database under ``./mlruns`` (MLflow 3 refuses the
plain file store by default); ``MLFLOW_TRACKING_URI`` or an explicit URI wins.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import subprocess
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from rllib_proxmo.advantages import ADVANTAGE_HYPERPARAMETERS
from rllib_proxmo.experiments.plots import plot_learning_curve
from rllib_proxmo.experiments.tables import evaluation_table, write_evaluation_table

logger = logging.getLogger(__name__)

#: MLflow's limits: values per ``log_batch`` call and characters per param value.
_BATCH_LIMIT = 100
_PARAM_VALUE_LIMIT = 6000
#: Characters MLflow accepts in param and metric names; others become "_".
_KEY_FORBIDDEN = re.compile(r"[^A-Za-z0-9_\-. /]")
#: Seconds to wait when probing an HTTP tracking server before giving up on it.
PROBE_TIMEOUT_S = 3.0
#: The end states of an MLflow run.
END_STATUSES = ("FINISHED", "FAILED", "KILLED")
#: Written into the built package by ``setup.py``: the commit a non-editable install was built from.
BUILD_COMMIT_FILE = Path(__file__).resolve().parents[1] / "GIT_COMMIT"


def default_tracking_uri(directory: str | Path = "mlruns") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs directory>/mlflow.db`` (created)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def _sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    prefix = "sqlite:///"
    database = tracking_uri[len(prefix) :].split("?", 1)[0] if tracking_uri.startswith(prefix) else ""
    return Path(database).resolve() if database else None


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """``<database dir>/artifacts/<experiment>`` for a SQLite store, else None (the store's default).

    MLflow's default artifact root for database stores is ``./mlruns`` under the current
    directory, which would scatter artifacts wherever the job was started.
    """
    database = _sqlite_database(tracking_uri)
    return None if database is None else (database.parent / "artifacts" / _clean_key(experiment)).as_uri()


def _clean_key(key: str) -> str:
    return _KEY_FORBIDDEN.sub("_", key)


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": str(value)}``, ready for MLflow params.

    Mappings are walked (keys joined by "."), every other value is written with
    ``str`` (lists, classes and callables included). Values longer than MLflow's
    limit are cut with a visible ``"...[truncated]"`` suffix.
    """
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = _clean_key(f"{prefix}{key}")
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
            continue
        text = str(value)
        if len(text) > _PARAM_VALUE_LIMIT:
            suffix = "...[truncated]"
            text = text[: _PARAM_VALUE_LIMIT - len(suffix)] + suffix
        flat[name] = text
    return flat


def flatten_metrics(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a (nested) result dict as ``{"a/b/c": float}``.

    Booleans, strings, NaN and infinities are left out (MLflow metrics are floats
    and a NaN point would break every chart).
    """
    flat: dict[str, float] = {}
    for key, value in result.items():
        name = _clean_key(f"{prefix}{key}")
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}/"))
            continue
        if hasattr(value, "item") and getattr(value, "size", None) == 1:
            value = value.item()  # a NumPy or torch scalar
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def git_commit(directory: str | Path | None = None) -> str:
    """Commit hash of the repository holding ``directory``, or "unknown".

    Without ``directory``: the commit of this package's code, i.e. the one ``setup.py``
    recorded in :data:`BUILD_COMMIT_FILE` when the package was built (a non-editable
    install, which has no repository), else the one of the source tree it is imported
    from (a checkout or an editable install).
    """
    if directory is None and BUILD_COMMIT_FILE.is_file():
        return BUILD_COMMIT_FILE.read_text(encoding="utf-8").strip() or "unknown"
    where = Path(directory) if directory else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_tags(config: Mapping[str, Any], scale: str) -> dict[str, str]:
    """The tags of a run of ``config`` (an ``AlgorithmConfig.to_dict()``, or a Tune trial's config).

    ``estimator``, ``env``, ``model``, ``seed``, ``scale`` (the
    :class:`~rllib_proxmo.experiments.scale.Scale` the sizes default to), the commit as
    ``git_commit`` and ``mlflow.source.git.commit``, and every credit-assignment
    setting a grid may sweep (``alpha``, ``beta``, ...), so that runs can be grouped
    without reading params.
    """
    commit = git_commit()
    tags = {
        "estimator": str(config["estimator"]),
        "env": str(config["env"]),
        "model": str(config["_model_config"]["model_name_or_path"]),
        "seed": str(config["seed"]),
        "scale": scale,
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
    }
    tags.update({name: str(config[name]) for name in ADVANTAGE_HYPERPARAMETERS})
    return tags


def write_run_files(
    directory: str | Path,
    history: Sequence[Mapping[str, float]],
    evaluation: Mapping[str, float] | None,
    *,
    env: str,
    estimator: str,
    title: str,
    start_evaluation: Mapping[str, float] | None = None,
    start_label: str = "start",
    split: str = "held-out",
) -> list[Path]:
    """Write a run's ``learning_curve.png`` (when ``history`` has a row) and
    ``evaluation.csv`` / ``evaluation.md`` (when it was evaluated) to ``directory``.

    Args:
        directory: Output directory (created).
        history: One :func:`~rllib_proxmo.experiments.tables.history_row` per iteration.
        evaluation: The last evaluation's ``env_runners`` metrics, or None.
        env, estimator: Select the table columns and name its row.
        title: Title of the learning curve.
        start_evaluation: The same evaluation of the policy RL started from (e.g. after
            the warm start): a first table row named ``start_label`` and a marker at
            iteration 0 of the curve.
        start_label: Name of that row and marker.
        split: Name of the evaluation's split in the curve's legend.

    Returns:
        The paths written.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if history:
        paths.append(
            plot_learning_curve(
                history,
                out / "learning_curve.png",
                title,
                evaluation,
                start_evaluation,
                start_label=start_label,
                split=split,
            )
        )
    if evaluation:
        rows = {} if start_evaluation is None else {start_label: evaluation_table(env, start_evaluation)}
        rows[estimator] = evaluation_table(env, evaluation)
        paths.extend(write_evaluation_table(rows, out))
    return paths


def directory_size(path: str | Path) -> int:
    """Total bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _check_reachable(uri: str) -> None:
    """Raise ``ConnectionError`` if an http(s) tracking server does not accept a connection.

    MLflow's own HTTP client retries with exponential backoff for minutes; one TCP
    connect with a short timeout tells a dead address at once.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as error:
        raise ConnectionError(f"tracking server {uri} is unreachable: {error}") from error


class RunTracker:
    """One MLflow run that degrades to a warning instead of failing training.

    Args:
        tracking_uri: Any MLflow tracking URI (``sqlite:///...``, ``http://...``).
        experiment: Experiment name (created when missing).
        run_name: Display name of the run.
        tags: Run tags (e.g. estimator, env, model, git commit).
        run_id: Continue this run (a resumed job: set RUNNING again, ``run_name`` and
            ``experiment`` unused) instead of creating one.

    A run whose tracking failed after it started is incomplete: :meth:`finish` then
    tries once more, with a fresh client, to end it FAILED with the tag
    ``tracking_incomplete`` (why tracking stopped), so that it does not stay RUNNING.

    Attributes:
        run_id: The MLflow run id, or None when no run was started.
        skipped_calls: Logging calls dropped since tracking was turned off.
        error: Why tracking turned itself off (None while it works).
    """

    def __init__(
        self, tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, str], run_id: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_id: str | None = None
        self.skipped_calls = 0
        self.error: str | None = None
        self._client: MlflowClient | None = None
        try:
            _check_reachable(tracking_uri)
            database = _sqlite_database(tracking_uri)
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)
            client = MlflowClient(tracking_uri=tracking_uri)
            if run_id is not None:
                client.update_run(run_id, status="RUNNING")
                self._client, self.run_id = client, run_id
                return
            found = client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id
                if found
                else client.create_experiment(
                    experiment, artifact_location=_artifact_location(tracking_uri, experiment)
                )
            )
            run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
        except Exception as error:  # noqa: BLE001 - any store failure must leave training running
            self._disable("could not start an MLflow run", error)
            return
        self._client = client
        self.run_id = run.info.run_id

    @property
    def active(self) -> bool:
        """Whether calls still reach the store."""
        return self._client is not None

    @property
    def complete(self) -> bool:
        """Whether a run was started and every call so far reached the store."""
        return self.run_id is not None and self.error is None

    def _disable(self, what: str, error: BaseException) -> None:
        self.error = f"{what}: {type(error).__name__}: {error}"
        message = (
            f"MLflow tracking is off for the rest of this run: {what} at {self.tracking_uri!r} "
            f"({type(error).__name__}: {error}). Training continues without tracking."
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        logger.warning(message)
        self._client = None

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        if self._client is None:
            self.skipped_calls += 1
            return
        try:
            getattr(self._client, method)(self.run_id, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - see class docstring
            self._disable(what, error)
            self.skipped_calls += 1

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params in batches of MLflow's per-call limit."""
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), _BATCH_LIMIT):
            self._call("logging params", "log_batch", params=items[start : start + _BATCH_LIMIT])

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """Log one point per metric at ``step`` (the training iteration); ``timestamp_ms`` defaults to now."""
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        items = [Metric(key, value, stamp, step) for key, value in metrics.items()]
        for start in range(0, len(items), _BATCH_LIMIT):
            self._call("logging metrics", "log_batch", metrics=items[start : start + _BATCH_LIMIT])

    def log_result(self, result: Mapping[str, Any]) -> None:
        """Log a training result's numbers (all but its ``config``) at step ``result["training_iteration"]``."""
        self.log_metrics(
            flatten_metrics({key: value for key, value in result.items() if key != "config"}),
            step=int(result["training_iteration"]),
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set (or overwrite) run tags."""
        self._call("setting tags", "log_batch", tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts (under ``artifact_path``)."""
        self._call(f"logging artifact {path}", "log_artifact", str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str) -> None:
        """Copy a directory tree into the run's artifacts."""
        self._call(f"logging artifacts {directory}", "log_artifacts", str(directory), artifact_path)

    def log_checkpoint(self, checkpoint_dir: str | Path, max_bytes: int) -> None:
        """Copy the checkpoint into the artifacts when it is at most ``max_bytes``, else tag its path."""
        self.set_tags({"checkpoint_path": str(Path(checkpoint_dir).resolve())})
        if directory_size(checkpoint_dir) <= max_bytes:
            self.log_artifacts(checkpoint_dir, "checkpoint")

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (one of :data:`END_STATUSES`); an incomplete run ends FAILED."""
        if status not in END_STATUSES:
            raise ValueError(f"status must be one of {END_STATUSES}, got {status!r}")
        if self.run_id is not None and self._client is None:
            self._end_incomplete_run()
            return
        self._call("ending the run", "set_terminated", status=status)

    def _end_incomplete_run(self) -> None:
        """One try with a fresh client to tag why tracking stopped and end the run FAILED."""
        try:
            client = MlflowClient(tracking_uri=self.tracking_uri)
            client.set_tag(self.run_id, "tracking_incomplete", self.error[:_PARAM_VALUE_LIMIT])
            client.set_terminated(self.run_id, status="FAILED")
        except Exception as error:  # noqa: BLE001 - see class docstring
            logger.warning(
                "MLflow run %s stays RUNNING at %r: ending it failed too (%s: %s)",
                self.run_id,
                self.tracking_uri,
                type(error).__name__,
                error,
            )

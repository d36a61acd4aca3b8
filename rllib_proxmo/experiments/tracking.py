"""MLflow tracking for ProxMO runs: config as params, results as metrics, tags, artifacts.

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
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

logger = logging.getLogger(__name__)

#: MLflow's limits: values per ``log_batch`` call and characters per param value.
_BATCH_LIMIT = 100
_PARAM_VALUE_LIMIT = 6000
#: Characters MLflow accepts in param and metric names; others become "_".
_KEY_FORBIDDEN = re.compile(r"[^A-Za-z0-9_\-. /]")
#: Seconds to wait when probing an HTTP tracking server before giving up on it.
PROBE_TIMEOUT_S = 3.0


def default_tracking_uri(directory: str | Path = "mlruns") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs directory>/mlflow.db`` (created)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """``<database dir>/artifacts/<experiment>`` for a SQLite store, else None (the store's default).

    MLflow's default artifact root for database stores is ``./mlruns`` under the current
    directory, which would scatter artifacts wherever the job was started.
    """
    prefix = "sqlite:///"
    database = tracking_uri[len(prefix) :].split("?", 1)[0] if tracking_uri.startswith(prefix) else ""
    if not database:
        return None
    return (Path(database).resolve().parent / "artifacts" / _clean_key(experiment)).as_uri()


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
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
        elif hasattr(value, "item") and getattr(value, "size", None) == 1:
            number = value.item()
            if isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number):
                flat[name] = float(number)
    return flat


def git_commit(directory: str | Path | None = None) -> str:
    """Commit hash of the repository holding ``directory`` (default: this package), or "unknown"."""
    where = Path(directory) if directory else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


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

    Attributes:
        run_id: The MLflow run id, or None when tracking is off.
        skipped_calls: Logging calls dropped since tracking was turned off.
    """

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, str]) -> None:
        self.tracking_uri = tracking_uri
        self.run_id: str | None = None
        self.skipped_calls = 0
        self._client: MlflowClient | None = None
        try:
            _check_reachable(tracking_uri)
            client = MlflowClient(tracking_uri=tracking_uri)
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

    def _disable(self, what: str, error: BaseException) -> None:
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

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_ms: int) -> None:
        """Log one point per metric at ``step`` (the training iteration)."""
        items = [Metric(key, value, timestamp_ms, step) for key, value in metrics.items()]
        for start in range(0, len(items), _BATCH_LIMIT):
            self._call("logging metrics", "log_batch", metrics=items[start : start + _BATCH_LIMIT])

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
        """End the run with ``status`` ("FINISHED", "FAILED" or "KILLED")."""
        self._call("ending the run", "set_terminated", status=status)

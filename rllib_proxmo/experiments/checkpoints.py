"""The main job's checkpoints: atomic saves, the latest one, free space, and the job's own state.

A run's output directory holds ``checkpoints/iteration_<k>/`` (periodic, the newest
:data:`KEPT_CHECKPOINTS` kept) and, after the final evaluation, ``checkpoint/``. Every save
is written to a hidden ``.<name>.partial`` directory next to its target and renamed when
complete, so a checkpoint that is not complete is never one that :func:`latest_checkpoint`
returns. Each periodic checkpoint also holds ``job_state.json``: what ``--resume`` needs
beyond the algorithm (the job's settings, the MLflow run, the history of the iterations
done and the training time spent).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PERIODIC_DIR = "checkpoints"
FINAL_DIR = "checkpoint"
JOB_STATE_FILE = "job_state.json"
#: Periodic checkpoints kept (the newest); older ones are deleted after a successful save.
KEPT_CHECKPOINTS = 2
#: A checkpoint holds the fp32 policy and AdamW's two moments: about 3 x 4 bytes per parameter.
CHECKPOINT_BYTES_PER_PARAMETER = 12
_PERIODIC_NAME = re.compile(r"iteration_(\d+)")


class InsufficientSpaceError(OSError):
    """Too little free disk space for the next checkpoint."""


def periodic_checkpoint_dir(output: Path, iteration: int) -> Path:
    return output / PERIODIC_DIR / f"iteration_{iteration:06d}"


def periodic_checkpoints(output: Path) -> list[Path]:
    """Complete periodic checkpoints of a run, oldest first."""
    directory = output / PERIODIC_DIR
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PERIODIC_NAME.fullmatch(p.name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(output: Path) -> Path | None:
    """The newest complete periodic checkpoint of the run in ``output`` (None: there is none)."""
    found = periodic_checkpoints(output)
    return found[-1] if found else None


def check_free_space(directory: Path, needed_bytes: int) -> None:
    """Raise :class:`InsufficientSpaceError` unless ``directory``'s filesystem has ``needed_bytes`` free."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise InsufficientSpaceError(
            f"not enough free disk space for a checkpoint in {directory}: {free / 2**20:.0f} MiB free, about "
            f"{needed_bytes / 2**20:.0f} MiB needed; free some space or write to another --output "
            "(the checkpoints saved so far are kept)"
        )


def save_atomically(algo: Any, target: Path, needed_bytes: int, job_state: Mapping[str, Any] | None = None) -> Path:
    """Save ``algo`` (and ``job_state`` as JSON) to ``target``, replacing it only once complete.

    Raises:
        InsufficientSpaceError: before writing anything, when less than ``needed_bytes`` are free.
    """
    check_free_space(target.parent, needed_bytes)
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    algo.save(str(partial))
    if job_state is not None:
        (partial / JOB_STATE_FILE).write_text(json.dumps(job_state, indent=1))
    previous = target.with_name(f".{target.name}.previous")
    if target.exists():
        shutil.rmtree(previous, ignore_errors=True)
        target.rename(previous)
    partial.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    return target


def prune_periodic(output: Path, keep: int = KEPT_CHECKPOINTS) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints."""
    for path in periodic_checkpoints(output)[:-keep]:
        shutil.rmtree(path)


def read_job_state(checkpoint: Path) -> dict[str, Any]:
    """The ``job_state.json`` of a periodic checkpoint."""
    path = checkpoint / JOB_STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} holds no {JOB_STATE_FILE}: it is not a checkpoint of the main job")
    return json.loads(path.read_text())

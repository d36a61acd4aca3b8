"""The main job's clean-up with a second SIGINT inside ``ray.shutdown()`` (run by ``test_interrupt.py``).

The signal lands right after the driver's core worker shut down and before Ray drops it, as the
job's second Ctrl-C did when the iteration ended within the 0.2 s between the two signals; the
object reference in a frame of the traceback is what the exiting interpreter frees afterwards.
The process exits like ``python -m rllib_proxmo.train`` (128 + the signal number).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import ray
from ray._private import worker

from rllib_proxmo.experiments.interrupt import Interrupted, StopOnSignal
from rllib_proxmo.experiments.main_job import shut_down


class SignalAfterShutdown:
    """The driver's core worker, with a SIGINT to this process right after it shuts down."""

    def __init__(self, core_worker: Any) -> None:
        self._core_worker = core_worker

    def shutdown_driver(self) -> None:
        self._core_worker.shutdown_driver()
        os.kill(os.getpid(), signal.SIGINT)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core_worker, name)


@ray.remote
def _task() -> int:
    return 1


def run(stop: StopOnSignal) -> None:
    """Start Ray, take the first SIGINT in the training loop, then clean up as the job does."""
    ray.init(num_cpus=1, include_dashboard=False)
    stop.install()
    reference = _task.remote()  # noqa: F841 (held by this frame, as the job's algo.train() frames hold theirs)
    try:
        with stop.finishing():
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(stop.exit_code)
    finally:
        worker.global_worker.core_worker = SignalAfterShutdown(worker.global_worker.core_worker)
        shut_down(stop, None, owns_ray=True)


if __name__ == "__main__":
    try:
        with StopOnSignal() as stop:
            run(stop)
    except Interrupted as interrupted:
        raise SystemExit(128 + interrupted.signum) from None

"""SIGINT and SIGTERM in the main job: finish the iteration, or abandon it on a second signal.

Inside :class:`StopOnSignal`, the first SIGINT or SIGTERM only sets :attr:`StopOnSignal.signal`
while the job is in its training loop (:meth:`StopOnSignal.finishing`): the running iteration
completes and the job then saves a checkpoint, marks its MLflow run KILLED and exits with
128 + the signal number. A signal outside the training loop (start-up, a hung ``--address``,
the final evaluation), or a second one, raises :class:`Interrupted` at once: the iteration in
progress is abandoned, the newest checkpoint already saved is what ``--resume`` continues from.
During the clean-up (:meth:`StopOnSignal.deferred`: stopping the algorithm and Ray) a signal
waits until the clean-up is done.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM that ends the job now."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopOnSignal:
    """Context manager installing the job's SIGINT/SIGTERM handlers (the previous ones come back on exit)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._finishing = False
        self._deferring = False
        self._deferred: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        self.install()
        return self

    def install(self) -> None:
        """(Re)install the handlers; call it again after something took them over (Ray's core worker)."""
        for signum in SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int:
        """128 + the signal number (the shell's convention), once a signal was received."""
        if self.signal is None:
            raise RuntimeError("no signal was received")
        return 128 + self.signal

    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        """While inside, a first signal lets the current iteration finish."""
        self._finishing = True
        try:
            yield
        finally:
            self._finishing = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While inside, a signal is held: it raises :class:`Interrupted` at the end, unless the block raised.

        For the clean-up: a ``ray.shutdown()`` interrupted between shutting the driver's core
        worker down and dropping it leaves it referenced; the exiting interpreter then frees
        the object references held by the traceback's frames, and Ray ends the process with
        status 1 instead of 128 + the signal number.
        """
        self._deferring, self._deferred = True, None
        try:
            yield
        finally:
            self._deferring = False
        if self._deferred is not None:
            raise Interrupted(self._deferred)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal is None
        self.signal = signum
        if self._deferring:
            self._deferred = signum
            print(f"\n{signal.Signals(signum).name}: stopping once the algorithm and Ray are shut down", flush=True)
            return
        if not (first and self._finishing):
            raise Interrupted(signum)
        print(
            f"\n{signal.Signals(signum).name}: finishing this iteration, then saving a checkpoint "
            "(send it again to stop at once)",
            flush=True,
        )

"""SIGINT and SIGTERM in the main job: finish the iteration, or abandon it on a second signal.

Inside :class:`StopOnSignal`, the first SIGINT or SIGTERM only sets :attr:`StopOnSignal.signal`
while the job is in its training loop (:meth:`StopOnSignal.finishing`): the running iteration
completes and the job then saves a checkpoint, marks its MLflow run KILLED and exits with
128 + the signal number. A signal outside the training loop (start-up, a hung ``--address``,
the final evaluation), or a second one, raises :class:`Interrupted` at once: the iteration in
progress is abandoned, the newest checkpoint already saved is what ``--resume`` continues from.
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

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal is None
        self.signal = signum
        if not (first and self._finishing):
            raise Interrupted(signum)
        print(
            f"\n{signal.Signals(signum).name}: finishing this iteration, then saving a checkpoint "
            "(send it again to stop at once)",
            flush=True,
        )

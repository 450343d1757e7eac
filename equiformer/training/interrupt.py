"""Turn Ctrl-C (SIGINT) and SIGTERM into a request to stop after the current step.

Raising ``KeyboardInterrupt`` mid-step would leave the optimizer half-updated and no
checkpoint; instead the handler only sets a flag, and the loop saves and leaves at the next
step boundary (all ranks agree on the step, see ``loop``). A second Ctrl-C aborts at once.
SIGTERM is what batch schedulers and torchrun send before killing a job, so it is handled the
same way, but repeating it does not abort (torchrun sends SIGTERM after the Ctrl-C itself).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class StopRequest:
    """Context manager installing the handlers; ``requested`` says whether to stop."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            if signum == signal.SIGINT and self.signal_name == "SIGINT":
                raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
            return
        self.signal_name = name
        hint = " (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""
        print(f"\n{name} received: finishing this step and saving a checkpoint{hint}", file=sys.stderr, flush=True)

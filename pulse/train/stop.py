"""A stop that saves: SIGINT (Ctrl-C) and SIGTERM during training end the run at a checkpoint.

The first signal asks the loop to stop: it finishes the step in flight, writes a whole
checkpoint (weights and the full training state, atomically, as the periodic ones are
written) and raises `Stopped`, whose message says how to continue — rerunning the same
command resumes exactly. Under torchrun every rank contributes its request to one sum per
step, so all ranks stop after the same step. A second signal stops at once
(KeyboardInterrupt): a checkpoint being written is removed whole, so the previous one stays
the newest. A repeat within `REPEAT_S` seconds of the first is the same request delivered
twice — torchrun forwards a Ctrl-C that the terminal already sent to every worker — and is
not a second signal.

Handlers are installed only in the main thread (elsewhere signals are not ours to set) and
the previous ones are put back when training ends.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_S = 1.0


def signal_name(signum: int) -> str:
    return "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name


class Stopped(KeyboardInterrupt):
    """Training stopped at a signal after writing a checkpoint; str() says where and how to continue.
    A KeyboardInterrupt, so that loops over many runs (sweeps, benchmarks, tools) stop too."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


class StopRequest:
    """The signal handler: remembers the first signal, raises KeyboardInterrupt at a second one."""

    def __init__(self, announce: bool = True):
        self.signum: int | None = None
        self.announce = announce
        self._at = 0.0

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __call__(self, signum: int, frame: Any = None) -> None:
        now = time.monotonic()
        if self.signum is not None:
            if now - self._at < REPEAT_S:
                return
            raise KeyboardInterrupt(f"a second {signal_name(signum)}: stopped at once. Every checkpoint already "
                                    "written is whole; run the same command again to continue from the newest.")
        self.signum, self._at = signum, now
        if self.announce and frame is not None:  # a signal, not another rank's (pulse.train.loop._agree)
            sys.stderr.write(f"\n{signal_name(signum)}: stopping after this step to save a checkpoint "
                             "(send it again to stop at once, without saving)\n")
            sys.stderr.flush()


@contextlib.contextmanager
def on_signals(*, announce: bool = True) -> Iterator[StopRequest]:
    """Install a `StopRequest` for SIGINT and SIGTERM while the block runs (main thread only)."""
    request = StopRequest(announce)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {sig: signal.signal(sig, request) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

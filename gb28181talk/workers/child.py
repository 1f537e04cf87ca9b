"""A media worker process: ``python -m gb28181talk.workers.child --fd 3 --index N``.

The control spawns it (``reactor.spawnProcess``) with one end of a UNIX
socket pair as ``--fd``; it speaks AMP (:class:`~gb28181talk.workers.media.WorkerProtocol`)
on it, logs plain lines to stderr (the control logs them with the worker's
prefix) and exits as soon as that connection goes away, whoever closed it:
a worker never outlives its control.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
from typing import Any

from twisted.internet.protocol import Factory
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)

from gb28181talk.workers.media import WorkerProtocol

PR_SET_PDEATHSIG = 1
"""prctl(2): the signal a process gets when its parent dies."""


def _line_observer(event: dict[str, Any]) -> None:
    """One plain line per event on stderr; the control adds the time and the worker's name."""
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}"
    sys.stderr.write(text.replace("\n", "\n\t") + "\n")
    sys.stderr.flush()


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent dies, even if its reactor is stuck.

    The closed control connection ends a worker that runs; this covers one that does not.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return


def main(argv: list[str] | None = None) -> int:
    """Run one media worker until its control connection closes."""
    _die_with_parent()
    parser = argparse.ArgumentParser(prog="gb28181talk.workers.child")
    parser.add_argument("--fd", type=int, required=True, help="the AMP socket to the control")
    parser.add_argument("--index", type=int, default=0, help="this worker's slot")
    parser.add_argument("--interface", default="", help="the media interface")
    parser.add_argument("--no-direct-send", action="store_true")
    options = parser.parse_args(argv)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(_line_observer, [predicate])],
                                     redirectStandardIO=False)

    from twisted.internet import reactor

    worker = WorkerProtocol(reactor, options.interface, direct_send=not options.no_direct_send)

    def lost() -> None:
        if reactor.running:
            reactor.stop()

    worker.on_lost = lost
    reactor.adoptStreamConnection(options.fd, socket.AF_UNIX,
                                  Factory.forProtocol(lambda: worker))
    os.close(options.fd)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

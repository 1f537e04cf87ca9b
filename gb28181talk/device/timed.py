"""Reading a device's socket one frame per read, each stamped with the kernel's receive time.

For devices that measure the platform (timed tests, the benchmarks' sampled devices): with
``SO_TIMESTAMPNS`` the kernel stamps each read with when the bytes reached the socket, not
when this process got round to reading them, and reading exactly `DeviceMedia.wanted` bytes
makes each read one packet, so each packet gets its own stamp.  Plain sockets, no reactor:
the owner calls `TimedReader.read` when its loop says the socket is readable.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterable

from gb28181talk.device.media import DeviceMedia

__all__ = [
    "ANCILLARY_SPACE",
    "SO_TIMESTAMPNS",
    "TimedReader",
    "enable_kernel_timestamps",
    "kernel_arrival",
]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux's option for nanosecond receive timestamps (35 where Python does not name it)."""

_TIMESPEC = struct.Struct("@qq")
ANCILLARY_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
"""The ancillary buffer one receive timestamp needs."""

_LARGEST_READ = 65536


def enable_kernel_timestamps(sock: socket.socket) -> None:
    """Ask the kernel to stamp every read of ``sock`` with its receive time."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def kernel_arrival(ancillary: Iterable[tuple[int, int, bytes]]) -> float | None:
    """The receive time (seconds since the epoch) in a recvmsg's ancillary data, if any."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanos = _TIMESPEC.unpack(value[: _TIMESPEC.size])
            return seconds + nanos * 1e-9
    return None


class TimedReader:
    """Feeds a non-blocking TCP socket into ``media``, one frame per recvmsg, kernel-stamped.

    Reads without a kernel stamp (timestamps off, or not Linux) are stamped with ``clock``
    (wall time, the kernel's clock).  `read` stops when the socket would block or is closed
    (then ``closed`` is True); a stream that is not framed RTP raises FramingError.
    """

    def __init__(
        self, sock: socket.socket, media: DeviceMedia, clock: Callable[[], float] = time.time
    ) -> None:
        self.sock = sock
        self.media = media
        self.clock = clock
        self.closed = False

    def read(self) -> int:
        """Read what waits now; the bytes read."""
        if self.closed:
            return 0
        recvmsg, media, clock = self.sock.recvmsg, self.media, self.clock
        receive = media.receive
        total = 0
        while True:
            try:
                data, ancillary, _flags, _address = recvmsg(
                    media.wanted or _LARGEST_READ, ANCILLARY_SPACE
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data, ancillary = b"", []
            if not data:
                self.closed = True
                media.end_of_stream(clock())
                break
            total += len(data)
            arrival = 0.0
            for level, kind, value in ancillary:  # kernel_arrival, inlined: once per packet
                if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    seconds, nanos = _TIMESPEC.unpack_from(value)
                    arrival = seconds + nanos * 1e-9
            receive(data, arrival or clock())
        return total

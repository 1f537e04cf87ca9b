"""Wires the port pool, talk sessions and the HTTP API into one twistd service."""

from __future__ import annotations

from twisted.application.service import IService, MultiService
from twisted.python import usage


class Options(usage.Options):
    """Command-line options of `twistd gbtalk`."""

    synopsis = "[options]"
    longdesc = "GB28181 voice broadcast and two-way talk over TCP passive mode."


def makeService(options: Options) -> IService:
    """Build the service tree from parsed options."""
    return MultiService()

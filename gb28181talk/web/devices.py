"""``GET /api/devices``: the GB28181 devices registered over SIP, as the registry knows them.

The web front end does not import the SIP one (they are sibling layers): the
service hands this resource any :class:`DeviceDirectory` (the SIP registry is
one), or None when SIP is off (the list is then empty).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.web.server import Request

from gb28181talk.web.common import Authenticator, JsonResource, RequestArgs


class DeviceDirectory(Protocol):
    """What the devices page reads: the SIP registry."""

    def describe(self) -> list[dict[str, Any]]:
        """Every registered device: id, address, transport, registered_at, last_keepalive,
        online, channels."""


class DevicesResource(JsonResource):
    """``/api/devices``: every registered device, its liveness and its catalog channels."""

    isLeaf = True

    def __init__(self, auth: Authenticator, directory: DeviceDirectory | None) -> None:
        super().__init__(auth)
        self.directory = directory

    def on_GET(self, request: Request, args: RequestArgs) -> dict[str, Any]:
        devices = self.directory.describe() if self.directory is not None else []
        return {"sip": self.directory is not None, "devices": devices}

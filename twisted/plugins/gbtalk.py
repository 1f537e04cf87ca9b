"""Makes `twistd gbtalk` find the GB28181 talk service (Twisted plugin discovery)."""

from twisted.application.service import ServiceMaker

gbtalk = ServiceMaker(
    "gb28181talk",
    "gb28181talk.service",
    "GB28181 voice broadcast and two-way talk media server (TCP passive mode)",
    "gbtalk",
)

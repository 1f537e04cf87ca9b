"""The typed exceptions of the library: every failure a caller can act on has a class here."""


class GbTalkError(Exception):
    """Base class of every error this library raises on purpose."""


class MediaError(GbTalkError):
    """Bytes that are not valid media: RTP, framing, G.711, WAV, MPEG-PS."""


class RtpError(MediaError):
    """An RTP packet that cannot be parsed or built (RFC 3550)."""


class FramingError(MediaError):
    """A TCP media byte stream that is not RFC 4571, interleaved or raw RTP, or a frame too big."""


class G711Error(MediaError):
    """Input to the G.711 codec that is not whole 16-bit samples."""


class WavError(MediaError):
    """A WAV file this project cannot read; the message names the file and what is wrong."""


class PsError(MediaError):
    """An MPEG program stream that cannot be muxed or demuxed."""


class SignallingError(GbTalkError):
    """Malformed GB28181 signalling: SDP or MANSCDP XML."""


class SdpError(SignallingError):
    """An SDP body that is not a usable GB28181 audio offer or answer."""


class ManscdpError(SignallingError):
    """A MANSCDP XML body that is malformed, hostile or of an unexpected type."""


class PortError(GbTalkError):
    """A talk port could not be leased."""


class PortInUseError(PortError):
    """The explicitly requested port cannot be bound; nothing else was changed."""

    def __init__(self, port: int, reason: str) -> None:
        super().__init__(f"port {port} cannot be used: {reason}")
        self.port = port
        self.reason = reason


class PoolExhaustedError(PortError):
    """No free port in the pool (or every try to bind one failed)."""


class SessionError(GbTalkError):
    """A talk session request that cannot be carried out."""


class SourceError(GbTalkError):
    """An audio source that does not exist, or cannot be created as asked."""

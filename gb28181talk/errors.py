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


class SipError(SignallingError):
    """A SIP message that cannot be taken: ``status`` and ``reason`` say what to answer.

    ``message`` is the request as far as it could be read when that is enough to
    answer it (its Via, From, To, Call-ID and CSeq); ``None`` means: drop it.
    """

    status = 400
    reason = "Bad Request"

    def __init__(self, detail: str, message: object | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.message = message


class SipParseError(SipError):
    """Bytes that are not a SIP message (RFC 3261 §25): answer 400, or drop."""


class SipTooLarge(SipError):
    """A SIP message past the size cap: answer 413."""

    status = 413
    reason = "Request Entity Too Large"


class SipVersionError(SipError):
    """A SIP version other than SIP/2.0: answer 505."""

    status = 505
    reason = "Version Not Supported"


class SipNotImplemented(SipError):
    """A request method this stack does not implement: answer 501."""

    status = 501
    reason = "Not Implemented"


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


# ----------------------------------------------------------------- the talk core's refusals


class PortBusy(PortInUseError):
    """The explicitly requested port is leased to another talk session."""

    def __init__(self, port: int, owner: str, state: str) -> None:
        GbTalkError.__init__(
            self,
            f"port {port} is busy: it is held by talk session {owner} ({state}); "
            "choose another src_port or leave it empty",
        )
        self.port = port
        self.reason = f"held by talk session {owner} ({state})"
        self.owner = owner
        self.state = state


class ShuttingDown(SessionError):
    """The service is shutting down and starts no new talk sessions."""

    def __init__(self, message: str = "the service is shutting down") -> None:
        super().__init__(message)


class SessionConflict(SessionError):
    """A live session has the same identity and other settings, and no replace was asked for."""

    def __init__(
        self, session_id: str, identity: object, port: int, state: str, differences: list[str]
    ) -> None:
        super().__init__(
            f"talk session {session_id} for {identity} is live on port {port} ({state}) with "
            f"other settings: {'; '.join(differences)}; send the same settings to get it "
            "again, or add \"replace\": true to end it and start afresh"
        )
        self.session_id = session_id
        self.identity = identity
        self.differences = list(differences)


class ReplaceFailed(SessionError):
    """The session to be replaced did not end when told to stop."""

    def __init__(self, session_id: str, identity: object) -> None:
        super().__init__(
            f"talk session {session_id} for {identity} did not end when replaced; the service "
            "log has the details"
        )
        self.session_id = session_id


class SessionNotFound(SessionError):
    """No live talk session has this identity (or id)."""


class RecordingUnavailable(SessionError):
    """The device's audio cannot be recorded: --record-dir is not writable, or a file failed."""


class FileMemoryFull(SourceError):
    """A file source would pass the file-source memory budget beside the files already held."""


class FileTooLargeForMemory(SourceError):
    """A file source alone would need more than the whole file-source memory budget."""


class SourceNotFound(SourceError):
    """No audio source has this app/stream."""

    def __init__(self, app: str, stream: str) -> None:
        super().__init__(
            f"can not find the source stream {app}/{stream}: create it with "
            "POST /api/sources or list them with GET /api/sources"
        )
        self.app = app
        self.stream = stream


class SourceEnded(SourceError):
    """The audio source exists but will never play again."""

    def __init__(self, app: str, stream: str) -> None:
        super().__init__(
            f"the source stream {app}/{stream} has ended; delete it and create it again "
            "(or create file sources with loop=true)"
        )
        self.app = app
        self.stream = stream


class NameTaken(SourceError):
    """The name asked for the device's audio (recv_stream_id) is a live source already."""

    def __init__(self, app: str, stream: str) -> None:
        super().__init__(
            f"recv_stream_id {stream!r} names the existing source {app}/{stream}; pick "
            "another name for the device's audio"
        )
        self.app = app
        self.stream = stream


class DeviceUnreachable(GbTalkError):
    """We dialled the device (TCP active) and could not reach it: refused, unreachable, timed out.

    ``local_port`` is the port we dialled from, 0 when none was bound.
    """

    def __init__(self, detail: str, local_port: int = 0) -> None:
        super().__init__(detail)
        self.local_port = local_port


class RtpServerExists(SessionError):
    """An RTP server for this vhost/app/stream_id is open already (ZLMediaKit refuses it too)."""


class RtpServerNotFound(GbTalkError):
    """No RTP server (or no device connected to it) for this vhost/app/stream_id."""

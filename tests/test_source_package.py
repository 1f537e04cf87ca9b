"""The sources package's shape and the live-source contract the pacer and the web layer rely on."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gb28181talk.core.pacer import Pacer, SourceTap
from gb28181talk.interfaces import FRAME_BYTES, IAudioSource, ILiveSource, IPusher
from gb28181talk.sources.live import LiveSource
from gb28181talk.sources.push import PushSource
from gb28181talk.testing import ListSource
from gb28181talk.web.push import CLOSE_GOING_AWAY, PushProtocol
from tests.test_push import FakeWebSocket
from tests.test_sources import ms

SOURCES = Path(__file__).resolve().parent.parent / "gb28181talk" / "sources"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sibling_imports(path: Path) -> set[str]:
    """The modules of the sources package that ``path`` imports (short names)."""
    prefix = "gb28181talk.sources."
    siblings = {p.stem for p in SOURCES.glob("*.py")}
    return {
        name[len(prefix):].split(".")[0]
        for name in imported_modules(path)
        if name.startswith(prefix) and name[len(prefix):].split(".")[0] in siblings
    }


# --------------------------------------------------------------------------- shape


def test_imports_point_one_way_kinds_to_base_and_live_registry_to_kinds() -> None:
    found = {path.stem: sibling_imports(path) for path in SOURCES.glob("*.py")}
    assert found == {
        "__init__": set(),
        "base": set(),
        "live": {"base"},
        "tone": {"base"},
        "file": {"base"},
        "device": {"live"},
        "push": {"base", "live"},
        "ingest": {"base", "live"},
        "registry": {"base", "file", "ingest", "push", "tone"},
    }


def test_no_source_module_speaks_http_or_websocket() -> None:
    for path in SOURCES.glob("*.py"):
        web = {name for name in imported_modules(path)
               if name.startswith(("twisted.web", "wsproto", "gb28181talk.web"))}
        assert not web, f"{path.name} imports {sorted(web)}"


# --------------------------------------------------------------------------- the pacer


class Listener:
    """Records the frames the pacer hands it."""

    def __init__(self) -> None:
        self.frames: list[bytes | None] = []

    def frame_ready(self, tap: SourceTap) -> None:
        self.frames.append(tap.pcm)

    def source_ended(self, tap: SourceTap) -> None:
        self.frames.append(b"ended")


def test_the_pacer_trims_a_live_sources_stale_backlog_when_the_first_listener_comes() -> None:
    source = LiveSource("live", "l", "rtp", max_backlog_ms=2000, prefill_ms=20)
    source.feed_pcm(ms(1000, 1) + ms(20, 2))  # a second of audio nobody heard
    pacer, listener = Pacer(Clock()), Listener()
    pacer.attach(source, listener)
    assert source.backlog_ms == 20 and source.describe()["dropped_ms"] == 1000
    source.feed_pcm(ms(20, 3))
    pacer.attach(source, Listener())  # a second listener: nothing more is trimmed
    assert source.backlog_ms == 40


def test_the_pacer_keeps_a_flow_controlled_backlog_whole() -> None:
    from tests.test_sources import RecordingProducer

    source = PushSource("live", "p", max_backlog_ms=100, prefill_ms=20)
    source.attach_producer(RecordingProducer())
    source.feed_pcm(ms(300, 1))
    Pacer(Clock()).attach(source, Listener())
    assert source.backlog_ms == 300 and source.paused


@implementer(IAudioSource)
class UndeclaredTrim(ListSource):
    """Has a ``trim_backlog`` but does not declare ILiveSource: the pacer must not guess."""

    def __init__(self) -> None:
        super().__init__([bytes(FRAME_BYTES)], loop=True)
        self.trims = 0

    def trim_backlog(self, keep_ms: int | None = None) -> int:
        self.trims += 1
        return 0


def test_the_pacer_goes_by_the_declared_interface_not_by_an_attribute_name() -> None:
    source = UndeclaredTrim()
    assert not ILiveSource.providedBy(source)
    Pacer(Clock()).attach(source, Listener())
    assert source.trims == 0


# --------------------------------------------------------------------------- the pusher


@implementer(IPusher)
class RecordingPusher:
    """A pusher as IPusher describes it: a peer and source_closed."""

    peer = "10.0.0.7:4000"

    def __init__(self) -> None:
        self.closed: list[str] = []

    def source_closed(self, reason: str) -> None:
        self.closed.append(reason)


def test_deleting_a_push_source_tells_its_pusher_why() -> None:
    source = PushSource("live", "p")
    pusher = RecordingPusher()
    assert verifyObject(IPusher, pusher)
    assert source.claim(pusher)
    assert source.describe()["pusher"] == "10.0.0.7:4000"
    source.close()
    assert pusher.closed == ["the push source was deleted"]


def test_the_web_pusher_hangs_up_with_1001_when_its_source_is_deleted() -> None:
    source = PushSource("live", "p")
    pusher = PushProtocol(source, "10.0.0.7:4000")
    assert verifyObject(IPusher, pusher)
    socket = FakeWebSocket()
    pusher.negotiationStarted(socket)  # type: ignore[arg-type]
    pusher.negotiationFinished()
    source.close()
    assert socket.sent[0][0] == "text"
    assert json.loads(socket.sent[0][1])["msg"] == "the push source was deleted"
    assert socket.sent[1] == ("close", CLOSE_GOING_AWAY, "the push source was deleted")
    assert CLOSE_GOING_AWAY == 1001

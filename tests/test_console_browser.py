"""The console in a real browser: headless Chromium, the real service, a simulated device.

``twistd -n gbtalk`` runs on loopback with SIP and a secret; ``gb28181talk-device``
registers over SIP and talks back a 1,400 Hz tone; Chromium's fake microphone plays a
600 Hz WAV. The page asks for the secret, lists the device, and:

* held push-to-talk pushes the microphone over WebRTC and broadcasts it: the WAV the
  device writes has the microphone's tone as its dominant frequency;
* two-way talk plays the device's voice in the page, whose playback analyser reports the
  device's tone, while the device hears the microphone's.

Screenshots of the page in known states are kept (pytest's tmp path, and
``$GBTALK_ARTIFACTS`` when set) and must not be blank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gb28181talk.device.media import DeviceMedia
from gb28181talk.media import wav
from gb28181talk.media.framing import Framing
from gb28181talk.media.law import Law
from tests.audiocheck import dominant_frequency
from tests.browser import (
    block_microphone,
    chromium,
    distinct_colours,
    require_browser,
    save_artifact,
    write_tone,
)
from tests.netutil import free_port, free_port_range

pytestmark = pytest.mark.peer

TWISTD = Path(sys.executable).with_name("twistd")
DEVICE = Path(sys.executable).with_name("gb28181talk-device")
DEVICE_ID = "34020000001320000001"
SECRET = "console-browser-secret"
MIC_HZ = 600
DEVICE_HZ = 1400


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 20.0,
             explain: Callable[[], str] = lambda: "") -> Any:
    """Poll ``condition`` until it returns something true; fail saying ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {timeout:.0f} s)\n{explain()}")
        time.sleep(0.1)


@dataclass
class Stack:
    """The service, the device and their logs in one folder."""

    folder: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    base: str = ""
    sip_port: int = 0

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.folder / f"{name}.out", "wb") as log:
            process = subprocess.Popen(argv, cwd=self.folder, stdout=log,
                                       stderr=subprocess.STDOUT, env=os.environ)
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "".join(f"---- {name}\n{self.log(name)[-4000:]}\n" for name in self.processes)

    def api(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as error:
            return json.loads(error.read())  # type: ignore[no-any-return]

    def serve(self, ports: int = 6, sip: bool = True) -> None:
        api, self.sip_port = free_port(), free_port()
        low, high = free_port_range(ports)
        argv = [
            str(TWISTD), "-n", "gbtalk", "--api", f"tcp:{api}:interface=127.0.0.1",
            "--port-range", f"{low}-{high}", "--advertise-ip", "127.0.0.1", "--secret", SECRET,
        ]
        if sip:
            argv += ["--sip", f"udp:{self.sip_port}:interface=127.0.0.1", "--sip-password",
                     "12345678", "--sip-advertise", "127.0.0.1"]
        if "--webrtc-advertise" in subprocess.run(
                [str(TWISTD), "gbtalk", "--help"], capture_output=True, text=True).stdout:
            argv += ["--webrtc-advertise", "127.0.0.1"]
        service = self.spawn("service", argv)
        self.base = f"http://127.0.0.1:{api}"

        def healthy() -> bool:
            assert service.poll() is None, self.log("service")
            try:
                return self.api("GET", "/api/health").get("status") == "ok"
            except OSError:
                return False

        wait_for("the service never answered", healthy, explain=self.logs)

    def device(self, *args: str, name: str = "device", expect: int = 1
               ) -> subprocess.Popen[bytes]:
        """Start a simulated device; wait until ``expect`` devices are online."""
        device = self.spawn(name, [
            str(DEVICE), "--server", f"127.0.0.1:{self.sip_port}", "--local-ip", "127.0.0.1",
            "--password", "12345678", "--wav-dir", str(self.folder), "--tone", str(DEVICE_HZ),
            "--duration", "120", *args,
        ])

        def online() -> bool:
            assert device.poll() is None, self.log(name)
            return sum(d["online"] and any(c["audio_output"] for c in d["channels"])
                       for d in self.api("GET", "/api/devices").get("devices", [])) >= expect

        wait_for("the device never registered", online, explain=self.logs)
        return device

    def require_webrtc(self) -> None:
        """The WebRTC endpoints the page pushes and plays through (``xfail`` until they land)."""
        listing = self.api("GET", "/api/webrtc")
        if listing.get("code") != 0 and "nothing at" in str(listing.get("msg")):
            pytest.xfail("this service has no /api/webrtc endpoints yet (issue 13, server side)")

    def live_peers(self) -> list[dict[str, Any]]:
        """The WebRTC peers of the console's app that are not over (``GET /api/webrtc``)."""
        listing = self.api("GET", "/api/webrtc")
        peers = listing.get("peers")
        if peers is None:  # the contract names the fields of a peer, not the list's key
            peers = next((v for v in listing.values() if isinstance(v, list)), [])
        return [peer for peer in peers if peer.get("app") == "console"
                and peer.get("state") not in ("closed", "failed", "ended")]

    def console_sessions(self) -> list[dict[str, Any]]:
        return [s for s in self.api("GET", "/api/sessions")["sessions"] if s["app"] == "console"]

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    require_browser()
    running = Stack(tmp_path)
    try:
        yield running
    finally:
        running.stop()
        print(running.logs())


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start headless Chromiums (fake microphone playing the tone); all quit at the end."""
    require_browser()
    microphone = write_tone(tmp_path / "tone.wav", MIC_HZ)
    started: list[Any] = []

    def start(grant: bool = True, extra: tuple[str, ...] = ()) -> Any:
        profile = tmp_path / f"profile-{len(started)}"
        profile.mkdir()
        started.append(chromium(profile, microphone, grant=grant, extra=extra))
        return started[-1]

    yield start
    for driver in started:
        try:
            for entry in driver.get_log("browser"):
                print("browser:", entry.get("level"), entry.get("message"))
        except Exception as error:  # the log is for a failure's report only
            print("no browser log:", error)
        driver.quit()


@pytest.fixture
def browser(browsers: Callable[..., Any]) -> Any:
    """One Chromium whose page may have the (fake) microphone."""
    return browsers()


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.execute_script(
        "return document.getElementById(arguments[0]).textContent", element_id))


def data_of(driver: Any, element_id: str, name: str) -> str:
    return str(driver.execute_script(
        "return document.getElementById(arguments[0]).dataset[arguments[1]]", element_id, name))


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    """Save the page as ``name``.png (and to $GBTALK_ARTIFACTS); fail if it is blank."""
    path = folder / f"{name}.png"
    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    save_artifact(path)
    assert distinct_colours(png) > 8, f"the screenshot {path} is blank"
    return path


def page_log(driver: Any) -> str:
    return text_of(driver, "log") + "\nstate: " + text_of(driver, "state")


def give_secret(driver: Any, url: str) -> None:
    """Load the page and give it the secret it asks for."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    form = driver.find_element(By.ID, "secret-form")
    wait_for("the page never asked for the secret", form.is_displayed,
             explain=lambda: text_of(driver, "service"))
    driver.find_element(By.ID, "secret").send_keys(SECRET)
    driver.find_element(By.ID, "secret-save").click()
    wait_for("the page kept asking for the secret", lambda: not form.is_displayed(),
             explain=lambda: text_of(driver, "service"))


def open_console(driver: Any, stack: Stack, base: str = "") -> None:
    """Load the page, give it the secret it asks for, wait for the device's row."""
    from selenium.webdriver.common.by import By

    give_secret(driver, (base or stack.base) + "/")
    form = driver.find_element(By.ID, "secret-form")
    row = f'tr[data-device-id="{DEVICE_ID}"]'
    wait_for("the device never showed in the page", lambda: driver.find_elements(
        By.CSS_SELECTOR, row), explain=lambda: text_of(driver, "service"))
    assert not form.is_displayed()
    assert "online" in driver.find_element(By.CSS_SELECTOR, row).text
    if len(driver.find_elements(By.CSS_SELECTOR, "input.pick")) == 1:
        pick = driver.find_element(By.CSS_SELECTOR, row + " input.pick")
        assert pick.is_selected(), "the only device is chosen for the operator"
    assert driver.execute_script("return sessionStorage.getItem('gb28181talk.secret')") == SECRET


def heard(stack: Stack, kind: str) -> bytes:
    """The PCM of the device's WAV of its ``kind`` call (broadcast or talk)."""
    found = wait_for(f"the device wrote no {kind} WAV", lambda: sorted(
        stack.folder.glob(f"{DEVICE_ID}-{kind}-*.wav")), explain=stack.logs)
    return wav.load_8k_mono(str(found[0]))


def test_the_page_lists_the_device_after_the_secret_and_is_not_blank(
        stack: Stack, browser: Any, tmp_path: Path) -> None:
    stack.serve()
    stack.device()
    open_console(browser, stack)
    assert browser.find_element("id", "ptt").is_enabled()
    assert data_of(browser, "state", "state") == "idle"
    assert browser.find_element("id", "insecure").is_displayed() is False  # 127.0.0.1
    screenshot(browser, tmp_path, "console-device-listed")


def test_push_to_talk_reaches_the_device_and_two_way_talk_plays_its_voice(
        stack: Stack, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    stack.serve()
    stack.require_webrtc()
    device = stack.device("--expect-audio", "--exit-after-calls", "2")
    open_console(browser, stack)

    # Hold to talk: the microphone's tone reaches the device.
    ptt = browser.find_element("id", "ptt")
    ActionChains(browser).click_and_hold(ptt).perform()
    wait_for("push-to-talk never started talking",
             lambda: data_of(browser, "state", "state") in ("talking", "error"),
             explain=lambda: page_log(browser) + stack.logs())
    assert data_of(browser, "state", "state") == "talking", page_log(browser) + stack.logs()
    wait_for("the broadcast never carried 3 s of audio", lambda: any(
        s["state"] == "streaming" and s["stats"]["packets_sent"] >= 150
        for s in stack.console_sessions()), timeout=30,
        explain=lambda: page_log(browser) + stack.logs())
    assert int(data_of(browser, "meter-out", "level")) > -60, "the microphone meter moves"
    assert [peer["kind"] for peer in stack.live_peers()] == ["push"], stack.live_peers()
    screenshot(browser, tmp_path, "console-talking")
    ActionChains(browser).release(ptt).perform()
    pcm = heard(stack, "broadcast")
    assert len(pcm) > 8000 * 2, stack.logs()
    assert dominant_frequency(pcm, range(200, 2000, 100)) == MIC_HZ, stack.logs()
    wait_for("the page never went back to idle",
             lambda: data_of(browser, "state", "state") == "idle",
             explain=lambda: page_log(browser))
    wait_for("the push was not ended", lambda: not stack.console_sessions())

    # Two-way talk: the page plays the device's tone, the device hears the microphone.
    browser.find_element("id", "talk").click()

    def device_tone() -> bool:
        if data_of(browser, "state", "state") == "error":
            raise AssertionError(page_log(browser) + stack.logs())
        return abs(int(data_of(browser, "meter-in", "frequency")) - DEVICE_HZ) <= 25

    wait_for(f"the page's playback analyser never heard the device's {DEVICE_HZ} Hz",
             device_tone, timeout=30, explain=lambda: (
                 f"frequency {data_of(browser, 'meter-in', 'frequency')} level "
                 f"{data_of(browser, 'meter-in', 'level')}\n" + page_log(browser) + stack.logs()))
    wait_for("the talk never carried 2 s of audio each way", lambda: any(
        s["stats"]["packets_sent"] >= 100 and s["stats"]["packets_received"] >= 100
        for s in stack.console_sessions()), timeout=30, explain=stack.logs)
    assert sorted(peer["kind"] for peer in stack.live_peers()) == ["play", "push"]
    screenshot(browser, tmp_path, "console-two-way-talk")
    browser.find_element("id", "talk").click()  # hang up
    pcm = heard(stack, "talk")
    assert dominant_frequency(pcm, range(200, 2000, 100)) == MIC_HZ, stack.logs()
    wait_for("the device did not finish its two calls", lambda: device.poll() is not None,
             explain=stack.logs)
    assert device.returncode == 0, stack.logs()
    wait_for("the page never went back to idle",
             lambda: data_of(browser, "state", "state") == "idle",
             explain=lambda: page_log(browser))
    wait_for("the page left WebRTC peers behind", lambda: not stack.live_peers(),
             explain=lambda: str(stack.live_peers()))


def test_a_blocked_microphone_is_said_in_plain_words(
        stack: Stack, browsers: Callable[..., Any], tmp_path: Path) -> None:
    stack.serve()
    stack.device()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = browsers(grant=False)
    block_microphone(driver, stack.base)
    open_console(driver, stack)
    ptt = driver.find_element("id", "ptt")
    driver.execute_script("arguments[0].focus()", ptt)
    ActionChains(driver).key_down(Keys.SPACE).pause(0.3).key_up(Keys.SPACE).perform()  # held
    wait_for("the page never said the microphone is blocked",
             lambda: data_of(driver, "state", "state") == "error", explain=lambda: page_log(driver))
    assert text_of(driver, "state").startswith("The microphone is blocked: allow it"), (
        page_log(driver))
    assert not stack.console_sessions()
    assert driver.find_element("id", "ptt").get_attribute("aria-pressed") == "false"
    screenshot(driver, tmp_path, "console-microphone-blocked")


def test_plain_http_from_another_host_says_why_there_is_no_microphone(
        stack: Stack, browsers: Callable[..., Any]) -> None:
    """Served as http://console.test (mapped to 127.0.0.1): not a secure context."""
    stack.serve()
    stack.device()
    driver = browsers(extra=("--host-resolver-rules=MAP console.test 127.0.0.1",))
    open_console(driver, stack, base=stack.base.replace("127.0.0.1", "console.test"))
    note = driver.find_element("id", "insecure")
    assert note.is_displayed()
    assert "served over plain HTTP from console.test" in note.text
    assert "HTTPS" in note.text and "localhost" in note.text
    driver.find_element("id", "ptt").click()
    wait_for("pressing talk did not explain", lambda: data_of(driver, "state", "state")
             == "error", explain=lambda: page_log(driver))
    assert "browsers give the microphone only to HTTPS pages" in text_of(driver, "state")


def test_a_device_that_never_connects_and_an_exhausted_pool_are_said_in_plain_words(
        stack: Stack, browser: Any, tmp_path: Path) -> None:
    """Press-once mode to two devices with one talk port: one never connects, one gets none."""
    from selenium.webdriver.common.by import By

    stack.serve(ports=1)
    stack.require_webrtc()
    stack.device("--never-connect")
    second = DEVICE_ID[:-1] + "2"
    stack.device("--never-connect", "--id", second, name="device2", expect=2)
    open_console(browser, stack)
    for pick in browser.find_elements(By.CSS_SELECTOR, "input.pick"):
        if not pick.is_selected():
            pick.click()
    browser.find_element("id", "toggle-mode").click()
    assert text_of(browser, "ptt").strip() == "Press to talk"
    browser.find_element("id", "ptt").click()
    wait_for("the page never said the device did not connect",
             lambda: "did not connect within" in text_of(browser, "log"), timeout=30,
             explain=lambda: page_log(browser) + stack.logs())
    log = text_of(browser, "log")
    assert "the port pool is exhausted" in log, log
    assert "did not connect within the service's wait time (5 s" in log, log
    wait_for("the page never gave up the call", lambda: data_of(browser, "state", "state")
             == "error", explain=lambda: page_log(browser))
    assert browser.find_element("id", "ptt").get_attribute("aria-pressed") == "false"
    screenshot(browser, tmp_path, "console-did-not-connect")
    wait_for("the page left WebRTC peers behind", lambda: not stack.live_peers(),
             explain=lambda: str(stack.live_peers()))


class TalkPortReader:
    """A device without SIP: connects to a talk port and keeps the RTP it hears (a thread)."""

    def __init__(self, port: int) -> None:
        self.media = DeviceMedia(framing=Framing.RFC4571, keep_packets=True)
        self.connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.connection.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.media.receive(data, time.monotonic())

    def pcm(self) -> bytes:
        """What it heard once the service closed the connection."""
        self.thread.join(20)
        self.connection.close()
        return self.media.pcm16(Law.ALAW)


def test_without_sip_the_console_lists_sources_and_talks_through_a_session(
        stack: Stack, browser: Any, tmp_path: Path) -> None:
    stack.serve(sip=False)
    give_secret(browser, stack.base + "/")
    wait_for("the page never showed the SIP-less view", lambda: text_of(
        browser, "targets-title") == "Sources and sessions", explain=lambda: page_log(browser))
    assert browser.find_element("id", "direct").is_displayed()
    assert not browser.find_element("id", "devices").is_displayed()
    made = stack.api("POST", "/api/sources", {"app": "broadcast", "stream": "tone",
                                              "kind": "tone", "frequency": 440})
    assert made["code"] == 0, made
    wait_for("the page never listed the new source",
             lambda: "broadcast/tone (tone)" in text_of(browser, "sources"))
    screenshot(browser, tmp_path, "console-without-sip")
    stack.require_webrtc()
    browser.find_element("id", "toggle-mode").click()
    browser.find_element("id", "ptt").click()
    sessions = wait_for("the page opened no talk session", stack.console_sessions,
                        explain=lambda: page_log(browser) + stack.logs())
    assert sessions[0]["ssrc"] == 100000001 and sessions[0]["state"] == "listening"
    wait_for("the page never said where the device must connect", lambda: (
        f"Waiting for the device on port {sessions[0]['local_port']}"
        in text_of(browser, "state")), explain=lambda: page_log(browser))
    device = TalkPortReader(sessions[0]["local_port"])
    wait_for("the page never listed the session streaming", lambda: "streaming with"
             in text_of(browser, "sessions"), explain=lambda: page_log(browser))
    wait_for("the session never carried 3 s of audio", lambda: any(
        s["stats"]["packets_sent"] >= 150 for s in stack.console_sessions()), timeout=30,
        explain=lambda: page_log(browser) + stack.logs())
    browser.find_element("id", "ptt").click()  # press once more: stop
    pcm = device.pcm()
    assert len(pcm) > 8000 * 2, stack.logs()
    assert dominant_frequency(pcm, range(200, 2000, 100)) == MIC_HZ, stack.logs()
    wait_for("the session was not ended", lambda: not stack.console_sessions())

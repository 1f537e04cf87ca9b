"""Headless Chromium for the console's tests: Debian's chromium and chromedriver, Selenium.

Selenium drives Debian's own ``chromedriver`` (the ``chromium-driver`` package is built from
the same source as ``chromium``, so the pair always matches; Playwright's Python package
pins a Chromium revision of its own and talks to another one at its risk). The microphone
is Chromium's fake device playing a WAV (``--use-file-for-fake-audio-capture``), the
permission prompt is answered yes (``--use-fake-ui-for-media-stream``), and every run has
a fresh profile. Also here: a tone WAV, and the check that a screenshot is not blank.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import wave
import zlib
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--window-size=1280,1000",
    "--autoplay-policy=no-user-gesture-required", "--use-fake-device-for-media-stream",
)

GRANT_MICROPHONE = "--use-fake-ui-for-media-stream"
"""Answer the microphone prompt yes (without it, the test denies the permission over CDP)."""


def require_browser() -> None:
    """Chromium, its driver and Selenium, or fail under ``GBTALK_REQUIRE_PEERS``/CI (else skip)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if not missing:
        return
    message = (f"{', '.join(missing)} missing; `./scripts/test` installs chromium and "
               "chromium-driver with apt-get and selenium with the test extra")
    if os.environ.get("GBTALK_REQUIRE_PEERS") or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def chromium(profile: Path, microphone: Path | None = None, grant: bool = True,
             extra: tuple[str, ...] = ()) -> Any:
    """A headless Chromium under WebDriver with a fresh profile and the fake microphone
    (``grant``: the page may have it, else the browser refuses it); ``extra`` flags."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    if grant:
        options.add_argument(GRANT_MICROPHONE)
    for flag in extra:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if microphone is not None:
        options.add_argument(f"--use-file-for-fake-audio-capture={microphone}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile.parent / "driver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def block_microphone(driver: Any, origin: str) -> None:
    """As if the operator had answered the microphone prompt of ``origin`` "Block"."""
    driver.execute_cdp_cmd("Browser.setPermission", {
        "permission": {"name": "microphone"}, "setting": "denied", "origin": origin})


def write_tone(path: Path, frequency: float, seconds: float = 10.0, rate: int = 48000) -> Path:
    """A mono 16-bit WAV of a sine at ``frequency`` (half scale), the fake microphone's input."""
    frames = bytearray()
    for n in range(int(seconds * rate)):
        frames += struct.pack("<h", int(16000 * math.sin(2 * math.pi * frequency * n / rate)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of pixel bytes) of an 8-bit RGB/RGBA PNG, filters undone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, chunks, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks)
    stride = width * size
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for x in range(stride):
            left = line[x - size] if x >= size else 0
            up = previous[x]
            corner = previous[x - size] if x >= size else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up),
                           (abs(guess - corner), 2, corner))
                line[x] = (line[x] + near[2]) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def distinct_colours(data: bytes, step: int = 7) -> int:
    """How many different colours a PNG screenshot shows (every ``step``-th pixel of a row)."""
    width, _height, rows = png_pixels(data)
    size = len(rows[0]) // width
    seen = set()
    for row in rows[::step]:
        for x in range(0, width, step):
            seen.add(row[x * size:x * size + 3])
    return len(seen)


def save_artifact(source: Path) -> Path | None:
    """Copy a test artifact into ``$GBTALK_ARTIFACTS`` when set; the copy's path."""
    folder = os.environ.get("GBTALK_ARTIFACTS")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, Path(folder) / source.name))

"""Settings: defaults, TOML, command line precedence, every check, and `twistd` exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.python import usage

from gb28181talk.config import (
    DEFAULT_API,
    ConfigError,
    ServiceConfig,
    build_config,
    endpoint_is_local,
    load_toml,
    split_endpoint,
)
from gb28181talk.service import Options

TWISTD = Path(sys.executable).with_name("twistd")


def parse(*argv: str) -> ServiceConfig:
    options = Options()
    options.exit_on_error = False
    options.parseOptions(list(argv))
    return options.config


def test_embedded_defaults() -> None:
    config = parse()
    assert config == ServiceConfig()
    assert config.api == DEFAULT_API == "tcp:8080:interface=127.0.0.1"
    assert config.port_range == (20000, 24999)
    assert (config.media_interface, config.wait_timeout, config.secret) == ("", 5.0, None)


def test_every_option_from_the_command_line(tmp_path: Path) -> None:
    config = parse(
        "--api", "tcp:9000:interface=0.0.0.0", "--secret", "s3cret", "--port-range", "40000-40100",
        "--media-interface", "127.0.0.1", "--advertise-ip", "192.0.2.7", "--wait-timeout", "2.5",
        "--hook-url", "http://127.0.0.1:18080/index/hook/", "--record-dir", str(tmp_path),
        "--media-dir", str(tmp_path), "--server-id", "talk-1",
    )
    assert config == ServiceConfig(
        api="tcp:9000:interface=0.0.0.0", port_range=(40000, 40100),
        media_interface="127.0.0.1", advertise_ip="192.0.2.7", wait_timeout=2.5,
        secret="s3cret", hook_url="http://127.0.0.1:18080/index/hook",
        record_dir=str(tmp_path), media_dir=str(tmp_path), server_id="talk-1",
    )


def test_toml_file_with_the_command_line_winning(tmp_path: Path) -> None:
    config_file = tmp_path / "gbtalk.toml"
    config_file.write_text(
        'port_range = [31000, 31010]\nwait-timeout = 3\nsecret = "from-file"\n'
        "api = 'tcp6:8081:interface=\\:\\:1'\n"
    )
    config = parse("--config", str(config_file), "--wait-timeout", "7")
    assert config.port_range == (31000, 31010)
    assert config.wait_timeout == 7.0
    assert config.secret == "from-file"
    assert config.api == "tcp6:8081:interface=\\:\\:1"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--wait-timeout", "x"], "--wait-timeout"),
        (["--wait-timeout", "0"], "out of range"),
        (["--wait-timeout", "nan"], "out of range"),
        (["--port-range", "3-5"], "1024"),
        (["--port-range", "abc"], "LO-HI"),
        (["--api", "tcp:8080"], "--secret"),
        (["--api", "ssl:8443:privateKey=/nonexistent.pem:interface=127.0.0.1"],
         "/nonexistent.pem"),
        (["--api", "nonsense:1"], "Unknown endpoint type"),
        (["--media-interface", "eth0"], "not an IP address"),
        (["--media-interface", "192.0.2.55"],
         "--media-interface 192.0.2.55 is not an address of this host: [Errno 99] Cannot "
         "assign requested address"),
        (["--advertise-ip", ""], "IP address"),
        (["--hook-url", "ftp://x"], "http://"),
        (["--record-dir", "/nonexistent/dir"], "create it first"),
        (["--secret", " "], "non-empty"),
        (["--bogus"], "bogus"),
        (["positional"], "unexpected argument"),
    ],
)
def test_bad_options_name_the_problem(argv: list[str], words: str) -> None:
    with pytest.raises(usage.UsageError) as raised:
        parse(*argv)
    message = str(raised.value)
    assert words in message
    assert "\n" not in message


def test_media_interface_must_be_bindable_here() -> None:
    assert parse("--media-interface", "127.0.0.1").media_interface == "127.0.0.1"
    assert parse("--media-interface", "0.0.0.0").media_interface == "0.0.0.0"
    assert parse("--media-interface", "").media_interface == ""
    with pytest.raises(ConfigError, match="not an address of this host"):
        build_config({"media-interface": "203.0.113.9"})


def test_bad_toml(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("wait-timeout = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(str(broken))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_toml(str(unknown))
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(str(tmp_path))
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'secret = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xff at offset 10\)"):
        load_toml(str(latin))


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp:8080:interface=127.0.0.1", True),
        ("tcp:8080:interface=127.1.2.3", True),
        ("tcp6:8080:interface=\\:\\:1", True),
        ("tcp:8080:interface=localhost", True),
        ("ssl:8443:privateKey=k.pem:certKey=c.pem:interface=127.0.0.1", True),
        ("unix:/run/gbtalk.sock", True),
        ("tcp:8080", False),
        ("tcp:8080:interface=0.0.0.0", False),
        ("tcp6:8080", False),
        ("ssl:8443:privateKey=k.pem", False),
        ("systemd:domain=INET:index=0", False),
    ],
)
def test_which_api_endpoints_stay_on_this_host(endpoint: str, local: bool) -> None:
    assert endpoint_is_local(endpoint) is local


def test_endpoint_strings_split_like_twisted() -> None:
    assert split_endpoint("tcp:80:interface=\\:\\:1") == (["tcp", "80"], {"interface": "::1"})
    assert split_endpoint("ssl:443:privateKey=a=b.pem") == (["ssl", "443"],
                                                            {"privateKey": "a=b.pem"})


@given(st.text(max_size=40))
def test_endpoint_check_never_crashes(text: str) -> None:
    try:
        build_config({"api": text})
    except ConfigError as error:
        assert "\n" not in str(error) or "\n" in text


def test_secret_makes_a_public_api_acceptable() -> None:
    assert build_config({"api": "tcp:8080", "secret": "t"}).secret == "t"


# --------------------------------------------------------------------------- real twistd


def twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TWISTD), "-n", "gbtalk", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd)


@pytest.mark.parametrize(
    "argv",
    [
        ["--wait-timeout", "soon"],
        ["--no-such-option"],
        ["--api", "tcp:8080:interface=0.0.0.0"],
        ["--port-range", "30000", "--config", "/nonexistent.toml"],
        ["--config", "latin.toml"],
        ["--media-interface", "192.0.2.55"],
        ["--config", "."],
    ],
)
def test_twistd_bad_options_one_line_exit_2(argv: list[str], tmp_path: Path) -> None:
    (tmp_path / "latin.toml").write_bytes(b'secret = "caf\xe9"\n')
    result = twistd(*argv, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("twistd gbtalk: ")
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""

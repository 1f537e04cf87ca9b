"""The SIP options: off by default, every value checked to one line, passwords from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from gb28181talk.config import DEFAULT_SIP_ID, ServiceConfig
from gb28181talk.service import Options


def parse(*argv: str) -> ServiceConfig:
    options = Options()
    options.exit_on_error = False
    options.parseOptions(list(argv))
    return options.config


def test_sip_is_off_by_default_with_gb28181_defaults():
    config = parse()
    assert config.sip == ()
    assert config.sip_id == DEFAULT_SIP_ID == "34020000002000000001"
    assert config.sip_domain == "3402000000" and config.sip_password == ""
    assert config.sip_advertise is None and config.keepalive_expiry == 180.0


def test_every_sip_option_from_the_command_line_and_sip_repeats():
    config = parse("--sip", "udp:5060", "--sip", "tcp:5060:interface=127.0.0.1",
                   "--sip-id", "44010000002000000099", "--sip-password", "pw",
                   "--sip-advertise", "192.0.2.7", "--keepalive-expiry", "30")
    assert config.sip == ("udp:5060", "tcp:5060:interface=127.0.0.1")
    assert config.sip_id == "44010000002000000099" and config.sip_domain == "4401000000"
    assert config.sip_password == "pw" and config.sip_advertise == "192.0.2.7"
    assert config.keepalive_expiry == 30.0
    assert parse("--sip-domain", "4401000001").sip_domain == "4401000001"


def test_toml_sip_list_and_per_device_passwords(tmp_path: Path):
    path = tmp_path / "gbtalk.toml"
    path.write_text('sip = ["udp:15060", "tcp:15060"]\nsip-password = "default"\n'
                    '[sip-passwords]\n"34020000001320000001" = "own"\n')
    config = parse("--config", str(path))
    assert config.sip == ("udp:15060", "tcp:15060") and config.sip_password == "default"
    assert dict(config.sip_passwords) == {"34020000001320000001": "own"}
    assert parse("--config", str(path), "--sip", "udp:5070").sip == ("udp:5070",)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--sip", "udp:http"], "--sip 'udp:http': port 'http' is not 0-65535"),
        (["--sip", "sctp:5060"], "--sip 'sctp:5060' is not a SIP endpoint"),
        (["--sip", "tcp:notaport"], "--sip 'tcp:notaport' is not a usable Twisted server"),
        (["--sip-id", "3402"], "--sip-id must be 20 digits"),
        (["--sip-domain", "34020000001"], "--sip-domain must be 10 digits"),
        (["--sip-advertise", "nowhere"], "--sip-advertise 'nowhere' is not an IP address"),
        (["--keepalive-expiry", "0"], "--keepalive-expiry '0' is not usable"),
        (["--keepalive-expiry", "soon"], "--keepalive-expiry 'soon' is not usable"),
    ],
)
def test_bad_sip_options_name_the_problem(argv: list[str], words: str):
    with pytest.raises(usage.UsageError) as raised:
        parse(*argv)
    message = str(raised.value)
    assert words in message and "\n" not in message


def test_bad_sip_passwords_table(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('[sip-passwords]\n"123" = "x"\n')
    with pytest.raises(usage.UsageError, match="'123' is not a 20-digit device id"):
        parse("--config", str(path))


def test_twistd_bad_sip_option_is_one_line_and_exit_2(tmp_path: Path):
    import subprocess
    import sys

    twistd = Path(sys.executable).with_name("twistd")
    result = subprocess.run([str(twistd), "-n", "gbtalk", "--sip", "udp:99999"],
                            capture_output=True, text=True, timeout=60, check=False,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("twistd gbtalk: --sip ")

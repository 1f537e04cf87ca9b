"""HTTPS for the API from an ``ssl:`` endpoint string, with a self-signed certificate made here."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.trial import unittest
from twisted.web.client import Agent, ResponseNeverReceived
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from gb28181talk.service import Options
from tests.httpapi import ServiceHarness, async_test, call


def self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    """A key and a certificate for localhost / 127.0.0.1; returns (key, cert, cert PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(cert_pem)
    return key_path, cert_path, cert_pem


@implementer(IPolicyForHTTPS)
class TrustOnly:
    """Trust exactly one certificate (ours), checking the host name against it."""

    def __init__(self, cert_pem: bytes) -> None:
        self.root = Certificate.loadPEM(cert_pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> object:
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self.root)


class TlsTests(unittest.TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="gbtalk-tls-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        key, cert, self.cert_pem = self_signed(self.directory)
        endpoint = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        options = Options()
        options.exit_on_error = False
        options.parseOptions(["--api", endpoint])  # the string is accepted as an option
        self.harness = ServiceHarness(ports=2, api=options.config.api, secret="s3cret")
        self.harness.start()
        self.port = self.harness.service.api_port.getHost().port

    def tearDown(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.harness.stop())

    @async_test
    async def test_https_api_with_a_trusted_self_signed_certificate(self) -> None:
        agent = Agent(reactor, contextFactory=TrustOnly(self.cert_pem))
        base = f"https://localhost:{self.port}"
        health = await call("GET", base + "/api/health", agent=agent)
        assert (health.status, health.json["status"]) == (200, "ok")
        made = await call("POST", base + "/api/sources", agent=agent,
                          json_body={"app": "a", "stream": "t", "kind": "tone"},
                          headers={"Authorization": "Bearer s3cret"})
        assert made.json["code"] == 0
        started = await call("GET", base + "/index/api/startSendRtpPassive", agent=agent,
                             query={"app": "a", "stream": "t", "ssrc": "1", "secret": "s3cret"})
        assert started.json["code"] == 0 and started.json["local_port"] >= self.harness.low

    @async_test
    async def test_plain_http_is_not_answered_on_the_tls_port(self) -> None:
        with self.assertRaises((ResponseNeverReceived, ConnectionLost)):
            await call("GET", f"http://127.0.0.1:{self.port}/api/health")

"""docker-registry behind HTTPS for the tests: a throwaway CA made with ``cryptography``, a server certificate for
``localhost`` and ``127.0.0.1``, optionally mutual TLS (``http.tls.clientcas``), and a generic launcher for
registries with a hand-written config (token auth, no deletion, TLS) that the plain fixtures do not cover.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.registry import REGISTRY_BIN, RunningRegistry, free_port

START_TIMEOUT = 20.0


# -- certificates -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCert:
    cert_path: Path
    key_path: Path


class TestCA:
    """A self-signed CA (EC P-256) that issues server and client certificates; PEM files under ``directory``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "lamina test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path = directory / "ca.pem"
        self.cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, hosts: tuple[str, ...] = (), client: bool = False) -> IssuedCert:
        """A leaf certificate for ``hosts`` (DNS names or IP addresses) or, with ``client``, for client auth."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                  else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = IssuedCert(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        issued.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        issued.key_path.chmod(0o600)
        return issued


# -- a registry with a hand-written config ------------------------------------------------------------------------


def launch_registry(workdir: Path, *, http_extra: str = "", top_extra: str = "", delete: bool = True,
                    scheme: str = "http", probe: Callable[[str], int] | None = None,
                    ready_statuses: tuple[int, ...] = (200, 401)) -> RunningRegistry:
    """docker-registry on 127.0.0.1 with storage under ``workdir``.

    ``http_extra`` is YAML indented under ``http:`` (two spaces, ``tls:`` say), ``top_extra`` top-level YAML
    (``auth:``). ``probe(url)`` answers the status of ``GET <url>/v2/`` (by default plain ``requests``); the
    registry is ready when it is one of ``ready_statuses``.
    """
    if shutil.which(REGISTRY_BIN) is None:
        raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: {'true' if delete else 'false'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: lamina-test-secret\n"
        + http_extra + top_extra
    )
    log_path = workdir / "registry.log"
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    reg = RunningRegistry(f"127.0.0.1:{port}", data, proc, log_path)
    url = f"{scheme}://127.0.0.1:{port}"

    def default_probe(base: str) -> int:
        return requests.get(f"{base}/v2/", timeout=1).status_code

    check = probe or default_probe
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if check(url) in ready_statuses:
                return reg
        except requests.RequestException:
            pass
        time.sleep(0.1)
    reg.stop()
    raise RuntimeError(f"docker-registry did not answer on {url}: {log_path.read_text(errors='replace')[-2000:]}")


# -- HTTPS registries ---------------------------------------------------------------------------------------------


@dataclass
class TlsRegistry:
    registry: RunningRegistry
    ca: TestCA
    client: IssuedCert | None  # a client certificate the registry accepts (mutual TLS), if it wants one

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def url(self) -> str:
        return f"https://{self.registry.host}"

    def stop(self) -> None:
        self.registry.stop()


def start_tls_registry(workdir: Path, ca: TestCA, *, mutual: bool = False) -> TlsRegistry:
    """docker-registry serving HTTPS on 127.0.0.1 with a certificate from ``ca`` (SAN: localhost, 127.0.0.1, ::1);
    with ``mutual``, it demands a client certificate issued by ``ca`` (``clientcas``)."""
    server = ca.issue(f"server-{workdir.name}", hosts=("localhost", "127.0.0.1", "::1"))
    client = ca.issue(f"client-{workdir.name}", client=True) if mutual else None
    tls = f"  tls:\n    certificate: {server.cert_path}\n    key: {server.key_path}\n"
    if mutual:
        tls += f"    clientcas:\n      - {ca.cert_path}\n"

    def probe(base: str) -> int:
        cert = (str(client.cert_path), str(client.key_path)) if client else None
        return requests.get(f"{base}/v2/", timeout=1, verify=str(ca.cert_path), cert=cert).status_code

    reg = launch_registry(workdir, http_extra=tls, scheme="https", probe=probe)
    return TlsRegistry(reg, ca, client)

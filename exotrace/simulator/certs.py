"""Key material the simulator needs: a CA, a loopback server certificate, client certificates, a signing key."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=3650)


_KEYS: dict[str, rsa.RSAPrivateKey] = {}
_KEYS_LOCK = threading.Lock()


def new_key(label: str = "") -> rsa.RSAPrivateKey:
    """An RSA key; keys with a ``label`` are made once per process (starting many simulators stays fast)."""
    if not label:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with _KEYS_LOCK:
        key = _KEYS.get(label)
        if key is None:
            key = _KEYS[label] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: str, issuer: str, public_key: object) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
    )


@dataclass
class ServerPki:
    """Paths of the generated CA and server certificate."""

    ca_file: str
    cert_file: str
    key_file: str


def make_server_pki(directory: Path, hosts: list[str]) -> ServerPki:
    """Write ``ca.pem``, ``server.pem`` and ``server-key.pem`` (SAN: ``hosts``) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = new_key("ca")
    ca_name = "exotrace simulator CA"
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    srv_key = new_key("server")
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    srv_cert = (
        _builder("exotrace simulator", ca_name, srv_key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = ServerPki(
        ca_file=str(directory / "ca.pem"),
        cert_file=str(directory / "server.pem"),
        key_file=str(directory / "server-key.pem"),
    )
    Path(paths.ca_file).write_bytes(cert_pem(ca_cert))
    Path(paths.cert_file).write_bytes(cert_pem(srv_cert))
    Path(paths.key_file).write_bytes(key_pem(srv_key))
    Path(paths.key_file).chmod(0o600)
    return paths


def make_client_cert(directory: Path, name: str) -> tuple[str, str]:
    """A self-signed client certificate for an app registration; returns (cert path, key path).

    ``<name>.pem`` (key and certificate in one file) is written beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    key = new_key(f"client:{name}")
    cert = _builder(f"exotrace-{name}", f"exotrace-{name}", key.public_key()).sign(key, hashes.SHA256())
    cpath, kpath = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    cpath.write_bytes(cert_pem(cert))
    kpath.write_bytes(key_pem(key))
    kpath.chmod(0o600)
    both = directory / f"{name}.pem"
    both.write_bytes(key_pem(key) + cert_pem(cert))
    both.chmod(0o600)
    return str(cpath), str(kpath)


def load_cert(path: str) -> x509.Certificate:
    """The first certificate in a PEM file (a combined key+cert file works too)."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def thumbprints(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(SHA-1, SHA-256) fingerprints, as carried in ``x5t`` / ``x5t#S256`` headers."""
    return cert.fingerprint(hashes.SHA1()), cert.fingerprint(hashes.SHA256())  # noqa: S303

"""Certificates for the test control plane and for the admission webhook.

Everything is generated with ``cryptography`` and written as PEM files, because the processes that
consume them (kube-apiserver, kopf, uvicorn, kubectl) want file paths. kopf's own self-signed
helpers go through ``oscrypto``, which breaks against OpenSSL 3, hence this module.

Certificates use ECDSA P-256 keys: they are generated in about a millisecond and every TLS stack
we talk to accepts them. Service-account token signing needs RSA (RS256), so that key pair is RSA.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_VALIDITY = datetime.timedelta(days=365)
# Back-date certificates a little so a clock that is slightly behind still accepts them.
_CLOCK_SKEW = datetime.timedelta(hours=1)
# Loopback names every serving certificate carries: our processes all listen on 127.0.0.1.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

CertificateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertificateFiles:
    """A certificate and its private key, as PEM files."""

    cert_file: Path
    key_file: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()


@dataclass(frozen=True)
class CertificateAuthority(CertificateFiles):
    """A CA that can issue certificates; ``cert_pem`` is what goes into a ``caBundle``."""

    certificate: x509.Certificate
    private_key: CertificateKey


@dataclass(frozen=True)
class SigningKeyPair:
    """An RSA key pair for signing service-account tokens (private) and verifying them (public)."""

    private_key_file: Path
    public_key_file: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _write_private_key(path: Path, key: CertificateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _validity(valid_for: datetime.timedelta) -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - _CLOCK_SKEW, now + valid_for


def subject_alternative_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """SAN entries for ``hosts``: IP addresses become IP entries, anything else a DNS name."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        if host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_ca(
    directory: Path,
    *,
    name: str = "ca",
    common_name: str = "kagent-ca",
    valid_for: datetime.timedelta = DEFAULT_VALIDITY,
) -> CertificateAuthority:
    """Create a self-signed CA and write ``<name>.crt`` and ``<name>.key`` into ``directory``."""
    key = _new_key()
    subject = _name(common_name)
    not_before, not_after = _validity(valid_for)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    _write_private_key(key_file, key)
    _write_cert(cert_file, cert)
    return CertificateAuthority(cert_file, key_file, cert, key)


def load_ca(cert_file: Path, key_file: Path) -> CertificateAuthority:
    """Load a CA written earlier by :func:`make_ca`, to issue more certificates from it."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"{key_file}: unsupported CA key type {type(key).__name__}")
    return CertificateAuthority(cert_file, key_file, cert, key)


def _issue(
    ca: CertificateAuthority,
    directory: Path,
    name: str,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
    valid_for: datetime.timedelta,
) -> CertificateFiles:
    key = _new_key()
    not_before, not_after = _validity(valid_for)
    # A certificate cannot be trusted past its issuer's expiry: never claim longer.
    not_after = min(not_after, ca.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca.private_key, hashes.SHA256())
    files = CertificateFiles(directory / f"{name}.crt", directory / f"{name}.key")
    _write_private_key(files.key_file, key)
    _write_cert(files.cert_file, cert)
    return files


def make_serving_cert(
    ca: CertificateAuthority,
    directory: Path,
    *,
    hosts: Iterable[str] = (),
    name: str = "serving",
    common_name: str | None = None,
    valid_for: datetime.timedelta = DEFAULT_VALIDITY,
) -> CertificateFiles:
    """Issue a TLS server certificate valid for 127.0.0.1, localhost and ``hosts``.

    ``hosts`` may mix DNS names (``my-webhook.ns.svc``) and IP addresses.
    """
    extra_hosts = list(hosts)
    return _issue(
        ca,
        directory,
        name,
        _name(common_name or (extra_hosts[0] if extra_hosts else "localhost")),
        ExtendedKeyUsageOID.SERVER_AUTH,
        subject_alternative_names([*LOOPBACK_HOSTS, *extra_hosts]),
        valid_for,
    )


def make_client_cert(
    ca: CertificateAuthority,
    directory: Path,
    *,
    common_name: str,
    groups: Iterable[str] = (),
    name: str | None = None,
    valid_for: datetime.timedelta = DEFAULT_VALIDITY,
) -> CertificateFiles:
    """Issue a client certificate; Kubernetes reads the CN as user name and each O as a group."""
    return _issue(
        ca,
        directory,
        name or common_name.replace(":", "-"),
        _name(common_name, groups),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
        valid_for,
    )


def make_signing_key_pair(directory: Path, *, name: str = "sa") -> SigningKeyPair:
    """Create an RSA key pair: ``<name>.key`` (PKCS#8) and ``<name>.pub`` (SubjectPublicKeyInfo)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pair = SigningKeyPair(directory / f"{name}.key", directory / f"{name}.pub")
    _write_private_key(pair.private_key_file, key)
    pair.public_key_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pair

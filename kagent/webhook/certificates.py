"""The webhook's TLS, renewed before it expires, without a restart and without refused writes.

The webhooks fail closed, so a moment in which the API server cannot verify the webhook's
certificate refuses every write of a Kagent object. Renewal therefore goes in two steps, as
cert-manager's CA injector and controller-runtime's cert rotator do:

1. well before the CA expires (a third of its lifetime left), a new CA is made and the
   ``caBundle`` given to the API server trusts both the old and the new one;
2. only after that bundle has had time to reach the API server does each replica serve a
   certificate issued by the new CA; the old CA leaves the bundle when it expires.

The CA lives in a Secret shared by every replica (optimistic concurrency decides which replica's
new CA wins). Serving certificates are issued per replica, renewed with a third of their
lifetime left, and loaded into the live TLS context: new connections get the new certificate.

The decisions are pure functions of the certificates and the time; :class:`ManagedCertificates`
is the I/O shell around them. With certificates from cert-manager (files in a directory),
:class:`FileCertificates` reloads them when they change.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Secret

from kagent.api.labels import (
    MANAGER,
    PART_OF_LABEL,
    WEBHOOK_CA_ROTATED_ANNOTATION,
    WEBHOOK_CA_SECRET,
)
from kagent.kube import is_not_found
from kagent.kube.certs import CertificateAuthority, load_ca, make_ca, make_serving_cert
from kagent.kube.incluster import owner_references

log = logging.getLogger("kagent.webhook.certificates")

PREVIOUS_CERT_KEY = "previous.crt"
PREVIOUS_KEY_KEY = "previous.key"
RENEW_FRACTION = 1 / 3
"""Renew a certificate once this share of its lifetime is left."""
MAX_PROPAGATION = datetime.timedelta(seconds=60)
"""How long a new CA stays in the bundle before certificates issued by it are served."""
MIN_CHECK_SECONDS, MAX_CHECK_SECONDS = 1.0, 3600.0


# --- pure decisions ------------------------------------------------------------------------------


def remaining(cert: x509.Certificate, now: datetime.datetime) -> datetime.timedelta:
    return cert.not_valid_after_utc - now


def lifetime(cert: x509.Certificate) -> datetime.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def renewal_due(cert: x509.Certificate) -> datetime.datetime:
    """When ``cert`` should be replaced: a third of its lifetime before it expires."""
    return cert.not_valid_after_utc - lifetime(cert) * RENEW_FRACTION


def expired(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_after_utc <= now


@dataclass(frozen=True)
class CaPair:
    cert: x509.Certificate
    key_pem: bytes

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CaState:
    """What the CA Secret holds: the newest CA, the one before it (while it may still be
    trusted), and when the newest one was made."""

    current: CaPair
    previous: CaPair | None = None
    rotated_at: datetime.datetime | None = None

    def propagation_delay(self) -> datetime.timedelta:
        """How long to wait before serving from a new CA: at most a minute, and never so long
        that the old CA expires first."""
        if self.previous is None or self.rotated_at is None:
            return datetime.timedelta(0)
        left = self.previous.cert.not_valid_after_utc - self.rotated_at
        return max(min(MAX_PROPAGATION, left / 4), datetime.timedelta(seconds=1))

    def trusted(self, now: datetime.datetime) -> list[CaPair]:
        """The CAs the API server must trust: the newest, and the previous until it expires."""
        keep = [self.current]
        if self.previous is not None and not expired(self.previous.cert, now):
            keep.append(self.previous)
        return keep

    def signer(self, now: datetime.datetime) -> CaPair:
        """The CA to issue serving certificates from: the newest once the bundle trusting it
        has had time to reach the API server, the previous one until then."""
        if self.previous is None or self.rotated_at is None or expired(self.previous.cert, now):
            return self.current
        if now - self.rotated_at >= self.propagation_delay():
            return self.current
        return self.previous

    def needs_new_ca(self, now: datetime.datetime) -> bool:
        return now >= renewal_due(self.current.cert)

    def next_event(self, now: datetime.datetime) -> datetime.datetime:
        """The next time something here changes: a renewal, the switch of signer, an expiry."""
        events = [renewal_due(self.current.cert)]
        if self.previous is not None and self.rotated_at is not None:
            events += [self.rotated_at + self.propagation_delay(), self.previous.cert.not_valid_after_utc]
        future = [e for e in events if e > now]
        return min(future) if future else now + datetime.timedelta(seconds=MAX_CHECK_SECONDS)


def bundle_pem(cas: Sequence[CaPair]) -> bytes:
    return b"".join(ca.cert_pem for ca in cas)


def rotate(state: CaState, new: CaPair, now: datetime.datetime) -> CaState:
    """The state after making ``new``: the current CA becomes the previous one."""
    return CaState(current=new, previous=state.current, rotated_at=now)


def check_after(next_event: datetime.datetime, now: datetime.datetime) -> float:
    seconds = (next_event - now).total_seconds()
    return min(max(seconds, MIN_CHECK_SECONDS), MAX_CHECK_SECONDS)


# --- the Secret ------------------------------------------------------------------------------------


def _load_pair(cert_pem: bytes, key_pem: bytes) -> CaPair:
    return CaPair(x509.load_pem_x509_certificate(cert_pem), key_pem)


def state_from_secret(secret: Secret) -> CaState:
    data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
    previous = None
    if PREVIOUS_CERT_KEY in data and PREVIOUS_KEY_KEY in data:
        previous = _load_pair(data[PREVIOUS_CERT_KEY], data[PREVIOUS_KEY_KEY])
    rotated = ((secret.metadata.annotations if secret.metadata else None) or {}).get(WEBHOOK_CA_ROTATED_ANNOTATION)
    return CaState(
        current=_load_pair(data["tls.crt"], data["tls.key"]),
        previous=previous,
        rotated_at=datetime.datetime.fromisoformat(rotated) if rotated else None,
    )


def secret_for(state: CaState, namespace: str, resource_version: str | None = None,
               owners: list[OwnerReference] | None = None) -> Secret:
    """The CA Secret; ``owners`` (the controller's ServiceAccount, in a pod) make `helm
    uninstall` take it along."""
    data = {"tls.crt": state.current.cert_pem, "tls.key": state.current.key_pem}
    if state.previous is not None:
        data[PREVIOUS_CERT_KEY] = state.previous.cert_pem
        data[PREVIOUS_KEY_KEY] = state.previous.key_pem
    annotations = {WEBHOOK_CA_ROTATED_ANNOTATION: state.rotated_at.isoformat()} if state.rotated_at else None
    return Secret(
        metadata=ObjectMeta(name=WEBHOOK_CA_SECRET, namespace=namespace, resourceVersion=resource_version,
                            labels={PART_OF_LABEL: MANAGER}, annotations=annotations,
                            ownerReferences=owners),
        type="kubernetes.io/tls",
        data={k: base64.b64encode(v).decode() for k, v in data.items()},
    )


def new_ca_pair(directory: Path) -> CaPair:
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        ca = make_ca(Path(scratch), name="ca", common_name=WEBHOOK_CA_SECRET)
        return CaPair(ca.certificate, ca.key_file.read_bytes())


# --- certificate sources for the server ------------------------------------------------------------


class CertificateSource(Protocol):
    """What the webhook server needs: a live TLS context, the CA bundle for the API server, and
    a signal whenever that bundle changes."""

    ssl_context: ssl.SSLContext

    def bundle(self) -> bytes: ...

    def changes(self) -> AsyncIterator[None]: ...

    async def run(self) -> None:
        """Keep the certificates fresh until cancelled."""


def _server_context() -> ssl.SSLContext:
    return ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)


class ManagedCertificates:
    """Kagent's own CA (in a Secret) and this replica's serving certificate, renewed in time."""

    def __init__(self, client: AsyncClient, namespace: str, directory: Path, hosts: list[str]) -> None:
        self.client = client
        self.namespace = namespace
        self.directory = directory
        self.hosts = hosts
        self.owners = owner_references(namespace)
        self.ssl_context = _server_context()
        self._state: CaState | None = None
        self._bundle = b""
        self._serving: x509.Certificate | None = None
        self._serving_signer: bytes | None = None
        self._changed = asyncio.Event()

    def bundle(self) -> bytes:
        return self._bundle

    async def start(self) -> None:
        """Load (or create) the CA and serve a certificate before the server starts."""
        self.directory.mkdir(parents=True, exist_ok=True)
        await self.refresh()

    async def refresh(self) -> float:
        """Bring CA, bundle and serving certificate up to date; seconds until the next look."""
        now = datetime.datetime.now(datetime.UTC)
        state = await self._load_or_create(now)
        if state.needs_new_ca(now):
            state = await self._rotate(state, now)
        self._state = state
        bundle = bundle_pem(state.trusted(now))
        if bundle != self._bundle:
            self._bundle = bundle
            self._changed.set()
            log.info("webhook CA bundle now trusts %d CA(s)", len(state.trusted(now)))
        signer = state.signer(now)
        if (self._serving is None or self._serving_signer != signer.cert_pem
                or now >= renewal_due(self._serving)):
            self._issue_serving(signer)
        next_event = min(state.next_event(now), renewal_due(self._serving) if self._serving else now)
        return check_after(next_event, now)

    async def run(self) -> None:
        """Keep refreshing until cancelled; a failed look is retried soon, never fatal while
        the current certificates are valid."""
        while True:
            try:
                delay = await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - logged; the next look retries
                log.warning("renewing the webhook certificates failed (will retry): %s", error)
                delay = 10.0
            await asyncio.sleep(delay)

    async def changes(self) -> AsyncIterator[None]:
        while True:
            await self._changed.wait()
            self._changed.clear()
            yield None

    # --- I/O ---------------------------------------------------------------------------------------

    async def _load_or_create(self, now: datetime.datetime) -> CaState:
        try:
            return state_from_secret(await self.client.get(Secret, WEBHOOK_CA_SECRET, namespace=self.namespace))
        except ApiError as error:
            if not is_not_found(error):
                raise
        state = CaState(current=new_ca_pair(self.directory))
        try:
            await self.client.create(secret_for(state, self.namespace, owners=self.owners))
            log.info("created the webhook CA (Secret %s/%s)", self.namespace, WEBHOOK_CA_SECRET)
            return state
        except ApiError as error:
            if error.status.code != 409:
                raise
        # Another replica created it first: use theirs.
        return state_from_secret(await self.client.get(Secret, WEBHOOK_CA_SECRET, namespace=self.namespace))

    async def _rotate(self, state: CaState, now: datetime.datetime) -> CaState:
        secret = await self.client.get(Secret, WEBHOOK_CA_SECRET, namespace=self.namespace)
        rotated = rotate(state, new_ca_pair(self.directory), now)
        try:
            await self.client.replace(
                secret_for(rotated, self.namespace, secret.metadata.resourceVersion if secret.metadata else None,
                           owners=self.owners))
        except ApiError as error:
            if error.status.code != 409:
                raise
            # Another replica rotated first (the resourceVersion moved on): use its CA.
            return state_from_secret(await self.client.get(Secret, WEBHOOK_CA_SECRET, namespace=self.namespace))
        log.info("renewed the webhook CA; the old one stays trusted until it expires at %s",
                 state.current.cert.not_valid_after_utc.isoformat())
        return rotated

    def _issue_serving(self, signer: CaPair) -> None:
        with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
            folder = Path(scratch)
            (folder / "ca.crt").write_bytes(signer.cert_pem)
            (folder / "ca.key").write_bytes(signer.key_pem)
            ca: CertificateAuthority = load_ca(folder / "ca.crt", folder / "ca.key")
            serving = make_serving_cert(ca, folder, hosts=self.hosts, name="serving")
            # Loaded into the live context: connections made from now on get this certificate.
            self.ssl_context.load_cert_chain(serving.cert_file, serving.key_file)
            self._serving = x509.load_pem_x509_certificate(serving.cert_file.read_bytes())
        self._serving_signer = signer.cert_pem
        log.info("serving a webhook certificate valid until %s",
                 self._serving.not_valid_after_utc.isoformat())


class FileCertificates:
    """Certificates from files someone else renews (cert-manager: tls.crt, tls.key, ca.crt),
    reloaded into the live context when they change."""

    def __init__(self, directory: Path, poll_seconds: float = 10.0) -> None:
        self.directory = directory
        self.poll_seconds = poll_seconds
        self.ssl_context = _server_context()
        self._digest = ""
        self._bundle = b""
        self.reload()

    def bundle(self) -> bytes:
        return self._bundle

    def _files(self) -> tuple[Path, Path, Path]:
        return self.directory / "tls.crt", self.directory / "tls.key", self.directory / "ca.crt"

    def reload(self) -> bool:
        """Load the files if they changed; whether the CA bundle changed."""
        cert, key, ca = self._files()
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in (cert, key) if p.exists())
                                + (ca.read_bytes() if ca.exists() else b"")).hexdigest()
        if digest == self._digest:
            return False
        self.ssl_context.load_cert_chain(cert, key)
        self._digest = digest
        bundle = ca.read_bytes() if ca.exists() else cert.read_bytes()
        changed = bundle != self._bundle
        self._bundle = bundle
        return changed

    async def run(self) -> None:
        """Nothing to renew here: :meth:`changes` polls the files."""
        await asyncio.Event().wait()

    async def changes(self) -> AsyncIterator[None]:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                changed = self.reload()
            except (OSError, ssl.SSLError) as error:  # mid-write by the mounter: next poll
                log.warning("reloading the webhook certificates failed (will retry): %s", error)
                continue
            if changed:
                yield None

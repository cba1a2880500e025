"""When the webhook's CA and serving certificates are renewed, and what the API server trusts
meanwhile: pure decisions over real certificates."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509

from kagent.kube.certs import load_ca, make_ca, make_serving_cert
from kagent.webhook.certificates import (
    MAX_PROPAGATION,
    CaPair,
    CaState,
    bundle_pem,
    check_after,
    renewal_due,
    rotate,
)

DAY = datetime.timedelta(days=1)


def _pair(tmp_path: Path, name: str, valid_for: datetime.timedelta) -> CaPair:
    ca = make_ca(tmp_path, name=name, valid_for=valid_for)
    return CaPair(ca.certificate, ca.key_file.read_bytes())


def test_a_fresh_ca_is_trusted_alone_and_signs(tmp_path: Path) -> None:
    state = CaState(current=_pair(tmp_path, "a", 365 * DAY))
    now = datetime.datetime.now(datetime.UTC)
    assert not state.needs_new_ca(now)
    assert state.trusted(now) == [state.current]
    assert state.signer(now) is state.current
    assert state.next_event(now) == renewal_due(state.current.cert)


def test_a_ca_with_a_third_of_its_life_left_is_renewed(tmp_path: Path) -> None:
    state = CaState(current=_pair(tmp_path, "a", 365 * DAY))
    due = renewal_due(state.current.cert)
    assert not state.needs_new_ca(due - datetime.timedelta(seconds=1))
    assert state.needs_new_ca(due)
    left = state.current.cert.not_valid_after_utc - due
    whole = state.current.cert.not_valid_after_utc - state.current.cert.not_valid_before_utc
    assert abs(left / whole - 1 / 3) < 1e-6


def test_after_rotation_both_cas_are_trusted_and_the_old_one_signs_until_the_bundle_spread(
        tmp_path: Path) -> None:
    old = _pair(tmp_path, "old", 365 * DAY)
    now = renewal_due(old.cert)
    state = rotate(CaState(current=old), _pair(tmp_path, "new", 365 * DAY), now)
    assert state.trusted(now) == [state.current, old]
    assert bundle_pem(state.trusted(now)) == state.current.cert_pem + old.cert_pem
    # Serving from the new CA before the API server trusts it would refuse every write.
    assert state.signer(now) is old
    assert state.propagation_delay() == MAX_PROPAGATION
    assert state.signer(now + MAX_PROPAGATION) is state.current
    assert state.next_event(now) == now + MAX_PROPAGATION
    # Once the old CA has expired it leaves the bundle.
    after = old.cert.not_valid_after_utc
    assert state.trusted(after) == [state.current]
    assert state.signer(after) is state.current


def test_a_ca_about_to_expire_switches_before_it_does(tmp_path: Path) -> None:
    """A CA with a minute left: the wait for the bundle to spread is cut to a quarter of it."""
    old = _pair(tmp_path, "old", datetime.timedelta(minutes=1))
    now = datetime.datetime.now(datetime.UTC)
    assert CaState(current=old).needs_new_ca(now)
    state = rotate(CaState(current=old), _pair(tmp_path, "new", 365 * DAY), now)
    delay = state.propagation_delay()
    assert datetime.timedelta(seconds=1) <= delay <= (old.cert.not_valid_after_utc - now) / 4
    assert state.signer(now + delay) is state.current
    assert now + delay < old.cert.not_valid_after_utc


def test_serving_certificates_never_outlive_their_ca(tmp_path: Path) -> None:
    short = make_ca(tmp_path, name="short", valid_for=datetime.timedelta(hours=2))
    serving = make_serving_cert(load_ca(short.cert_file, short.key_file), tmp_path, hosts=["a.svc"])
    cert = x509.load_pem_x509_certificate(serving.cert_file.read_bytes())
    assert cert.not_valid_after_utc == short.certificate.not_valid_after_utc


def test_checks_are_bounded() -> None:
    now = datetime.datetime.now(datetime.UTC)
    assert check_after(now - DAY, now) == 1.0
    assert check_after(now + 365 * DAY, now) == 3600.0
    assert check_after(now + datetime.timedelta(seconds=42), now) == 42.0

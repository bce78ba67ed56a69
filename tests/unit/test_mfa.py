"""TOTP as authenticator apps make it (RFC 6238): drift, step boundaries, code shapes; the key check at start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from cryptography.fernet import Fernet

from jit_lb.access.errors import MfaKeyError
from jit_lb.access.mfa import fernet, matching_step, provisioning_uri

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
STEP_START = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)  # a multiple of 30 s since the epoch


def code_at(moment: datetime) -> str:
    """The code an authenticator app shows at `moment` (pyotp, as the RFC's reference does)."""
    return pyotp.TOTP(SECRET).at(moment)


def test_a_code_matches_its_own_step() -> None:
    """The code of now matches now's time step."""
    assert int(STEP_START.timestamp()) // 30 == matching_step(SECRET, code_at(STEP_START), STEP_START)


@pytest.mark.parametrize("offset", [-30, 30])
def test_one_step_of_drift_either_side_is_accepted(offset: int) -> None:
    """A phone 30 s behind or ahead still works: the code of the neighbouring step matches it."""
    phone = STEP_START + timedelta(seconds=offset)
    step = matching_step(SECRET, code_at(phone), STEP_START)
    assert int(phone.timestamp()) // 30 == step


@pytest.mark.parametrize("offset", [-60, 61])
def test_two_steps_off_is_refused(offset: int) -> None:
    """A code from a minute away is not accepted."""
    assert matching_step(SECRET, code_at(STEP_START + timedelta(seconds=offset)), STEP_START) is None


def test_step_boundaries() -> None:
    """At 29.999 s a step's code is still current; at 30 s the next step's code is current and the old one drifts."""
    last_moment = STEP_START + timedelta(seconds=29, microseconds=999_000)
    first_of_next = STEP_START + timedelta(seconds=30)
    step = int(STEP_START.timestamp()) // 30
    assert step == matching_step(SECRET, code_at(STEP_START), last_moment)
    assert step + 1 == matching_step(SECRET, code_at(first_of_next), first_of_next)
    assert step == matching_step(SECRET, code_at(STEP_START), first_of_next)  # the drift allowance


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5", "١٢٣٤٥٦"])
def test_malformed_codes_never_match(code: str) -> None:
    """Anything but six ASCII digits is refused without computing anything."""
    assert matching_step(SECRET, code, STEP_START) is None


def test_the_uri_is_what_authenticator_apps_read() -> None:
    """otpauth://totp/ with the issuer, the person, the secret; SHA-1, 6 digits and 30 s are the defaults apps use."""
    uri = provisioning_uri(SECRET, "U0DEV1")
    assert uri.startswith("otpauth://totp/jit-lb:U0DEV1?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    assert "issuer=jit-lb" in uri


def test_the_key_is_required_when_a_target_requires_mfa() -> None:
    """No key, or not a Fernet key, while a target requires MFA: the process refuses to start, naming the variable."""
    with pytest.raises(MfaKeyError, match="JIT_MFA_KEY: is required because these targets require MFA: lb-prod"):
        fernet(None, ["lb-prod"])
    with pytest.raises(MfaKeyError, match="JIT_MFA_KEY: is not a Fernet key"):
        fernet("not-a-key", ["lb-prod"])
    assert fernet(None, []) is None
    assert fernet(Fernet.generate_key().decode(), ["lb-prod"]) is not None

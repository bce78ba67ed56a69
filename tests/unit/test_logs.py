"""Log lines lose every secret and token, whatever logger writes them (docs: Step-up MFA)."""

from __future__ import annotations

import pyotp

from jit_lb.logs import Redactor, secret_values


def test_a_totp_uri_its_secret_and_slack_tokens_are_redacted() -> None:
    """The enrolment's URI, a bare `secret=`, Slack tokens and the AWS session token header go; the words stay."""
    secret = pyotp.random_base32()
    line = (
        f"json_body: {{'text': 'add key: `otpauth://totp/jit-lb:U0DEV1?secret={secret}&issuer=jit-lb`'}} "
        f"secret%3D{secret} xoxb-1-abc xoxp-2-def xapp-1-A0 'X-Amz-Security-Token': b'FQoGZXIvYXdzE+/='"
    )
    redacted = Redactor()(line)
    assert secret not in redacted
    for token in ("otpauth://", "xoxb-1-abc", "xoxp-2-def", "xapp-1-A0", "FQoGZXIvYXdzE"):
        assert token not in redacted
    assert "json_body" in redacted
    assert "X-Amz-Security-Token" in redacted


def test_the_processes_own_secrets_are_redacted_by_value() -> None:
    """The values of JIT_MFA_KEY, the signing secret and the like are removed wherever they appear."""
    environ = {"SLACK_SIGNING_SECRET": "8f742231b10e8888", "JIT_MFA_KEY": "a-fernet-key=", "PORT": "3000"}
    redact = Redactor(secret_values(environ))
    assert (
        redact("signing 8f742231b10e8888 key a-fernet-key= port 3000") == "signing (redacted) key (redacted) port 3000"
    )

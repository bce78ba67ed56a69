"""What carries an enrolment's secret to its person: the DM with the `otpauth://` URI and its QR code, each
remembered as it is posted, so that the workers delete it once the enrolment is confirmed or abandoned
(docs/command-and-slack.md, Step-up MFA). The web posts it; what Slack refuses there, a worker posts."""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import timedelta

import segno

from jit_lb.access.mfa import MfaStore, provisioning_uri
from slack_out import sentences
from slack_out.poster import Notifier

PARTS = ("message", "file")


def post_enrolment(
    mfa: MfaStore, notifier: Notifier, user: str, within: timedelta, parts: Iterable[str] = PARTS
) -> list[str]:
    """Post `parts` of `user`'s enrolment while it waits for its first code; the parts Slack did not take.

    `notifier` must not hand a rate-limited call on (Notifier.undeferred in the web): the call's arguments,
    the secret among them, would go into the queue, and the message posted from there is remembered nowhere.
    """
    enrolment = mfa.enrolment(user)
    if enrolment is None or enrolment.confirmed:
        return []
    uri = provisioning_uri(enrolment.secret, user)
    wanted = set(parts)
    missing = []
    if "message" in wanted:
        posted = notifier.dm(user, sentences.mfa_enrolment_text(uri, within))
        if posted is None:
            missing.append("message")
        else:
            mfa.keep_carrier(user, "message", list(posted))
    if "file" in wanted:
        png = io.BytesIO()
        segno.make(uri, error="m").save(png, kind="png", scale=6, border=4)
        file_id = notifier.send_file(
            user, png.getvalue(), "jit-lb-mfa.png", "jit-lb step-up", "Scan this with your app."
        )
        if file_id is None:
            missing.append("file")
        else:
            mfa.keep_carrier(user, "file", [file_id])
    return missing

"""Step-up MFA (docs/command-and-slack.md): TOTP enrolments encrypted, codes checked once, lockouts, the proof's window.

TOTP is RFC 6238 as every authenticator app reads it (SHA-1, 6 digits, 30-second steps), checked
with `pyotp`, one step either side for clock drift, time as a parameter. A code is accepted once:
the time step it matched is remembered, so a code seen over someone's shoulder is worth nothing.
Secrets are Fernet-encrypted with JIT_MFA_KEY before they reach Redis and are never logged.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyotp
import redis
from cryptography.fernet import Fernet, InvalidToken

from jit_lb.access.errors import MfaError, MfaKeyError
from jit_lb.access.store import PREFIX, reachable

ISSUER = "jit-lb"
STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1  # one step either side: a phone whose clock is up to 30 s off still works

_SECRET = PREFIX + "mfa:secret:"  # the encrypted enrolment of a user
_USED = PREFIX + "mfa:used:"  # time steps already accepted for a user (a code works once)
_FAILS = PREFIX + "mfa:fails:"  # wrong codes in a row, until the lockout window passes
_LOCKED = PREFIX + "mfa:locked:"  # set while a user is locked out of step-ups
_PROVEN = PREFIX + "mfa:proven:"  # set while a verified code proves the user (mfa.window)
_CARRIERS = PREFIX + "mfa:carriers:"  # the Slack messages and files that carried a user's secret, until deleted
_FORGET = PREFIX + "mfa:forget"  # users whose carriers (or unconfirmed enrolment) are due to go, by when
SECRET_GRACE = timedelta(minutes=1)  # Redis drops an unconfirmed secret itself this long after the worker should

# One try at a code, counted before the code is checked, in one step with the lockout's check: codes sent at the
# same moment each get their own number, and none past `lockout_after` is checked at all. -1: locked out;
# 0: more tries at once than allowed (not checked); else the try's number since the last good code.
_ATTEMPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if count > tonumber(ARGV[1]) then return 0 end
return count
"""
# A wrong code on the try numbered `lockout_after` locks: once (SET NX), so one lockout is told once.
_LOCK = """
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then
  redis.call('DEL', KEYS[2], KEYS[3])
  return 1
end
return 0
"""

# Drop an enrolment only while it is still unconfirmed and still the one begun at ARGV[1]: a first code
# confirming it at the same moment wins, and a newer enrolment is not the abandoned one.
_ABANDON = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local record = cjson.decode(raw)
if record['confirmed'] or record['created_at'] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


def fernet(key: str | None, needed_by: list[str]) -> Fernet | None:
    """The cipher of enrolled secrets; refuses to start when targets require MFA and the key is missing or bad."""
    if not key:
        if needed_by:
            raise MfaKeyError(f"JIT_MFA_KEY: is required because these targets require MFA: {', '.join(needed_by)}")
        return None
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        raise MfaKeyError("JIT_MFA_KEY: is not a Fernet key (make one with Fernet.generate_key())") from None


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, user: str) -> str:
    """The `otpauth://` URI an authenticator app reads (as a QR code, or typed in)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=user, issuer_name=ISSUER)


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step `code` is valid for at `now` (within the drift allowed), or None: RFC 6238, SHA-1, 6 digits."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = totp.timecode(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


@dataclass(frozen=True)
class Enrolment:
    """One person's authenticator: confirmed once they typed a first good code."""

    user: str
    secret: str
    confirmed: bool
    created_at: datetime
    confirmed_at: datetime | None = None


@dataclass(frozen=True)
class Status:
    """What `/jit mfa status` says."""

    enrolment: Enrolment | None
    locked_for: timedelta | None
    proven_for: timedelta | None


class MfaStore:
    """Enrolments, used codes, failures and proofs in Redis; every key is built here."""

    def __init__(self, client: redis.Redis, cipher: Fernet | None) -> None:
        self.redis = client
        self.cipher = cipher

    def _need_cipher(self) -> Fernet:
        if self.cipher is None:
            raise MfaError("MFA is not set up on this jit-lb (JIT_MFA_KEY is not set); ask your platform team")
        return self.cipher

    def save(self, enrolment: Enrolment, expires_in: timedelta | None = None) -> None:
        """Keep `enrolment` (sealed); an unconfirmed one with `expires_in`, after which Redis drops it by itself."""
        sealed = self._need_cipher().encrypt(enrolment.secret.encode()).decode()
        record = {
            "secret": sealed,
            "confirmed": enrolment.confirmed,
            "created_at": enrolment.created_at.isoformat(),
            "confirmed_at": enrolment.confirmed_at.isoformat() if enrolment.confirmed_at else None,
        }
        seconds = max(1, int(expires_in.total_seconds())) if expires_in is not None else None
        with reachable():
            self.redis.set(_SECRET + enrolment.user, json.dumps(record), ex=seconds)

    def abandon(self, enrolment: Enrolment) -> bool:
        """Destroy `enrolment` if it is still unconfirmed and still the current one; True when it was."""
        with reachable():
            done = self.redis.eval(_ABANDON, 1, _SECRET + enrolment.user, enrolment.created_at.isoformat())
        return bool(done)

    # --- what Slack keeps of a secret: the DM and the QR code, until they are deleted -------------------

    def keep_carrier(self, user: str, kind: str, ref: list[str]) -> None:
        """Remember a Slack object that carries `user`'s secret: ("message", [channel, ts]) or ("file", [id])."""
        with reachable():
            self.redis.rpush(_CARRIERS + user, json.dumps([kind, *ref]))

    def carriers(self, user: str) -> list[list[str]]:
        with reachable():
            raw = self.redis.lrange(_CARRIERS + user, 0, -1)
        return [list(json.loads(item)) for item in raw]

    def carrier_gone(self, user: str, carrier: list[str]) -> None:
        with reachable():
            self.redis.lrem(_CARRIERS + user, 0, json.dumps(carrier))

    def forget_at(self, user: str, when: datetime) -> None:
        """Have the workers delete `user`'s carriers (and an enrolment then still unconfirmed) at `when`, or sooner
        if that was asked already."""
        with reachable():
            self.redis.zadd(_FORGET, {user: when.timestamp()}, lt=True)  # LT still adds a user not there

    def due_to_forget(self, now: datetime) -> list[str]:
        with reachable():
            raw = self.redis.zrangebyscore(_FORGET, "-inf", now.timestamp())
        return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]

    def take_forget(self, user: str) -> bool:
        """Claim `user`'s due forgetting: True for the one worker that takes it."""
        with reachable():
            return bool(self.redis.zrem(_FORGET, user))

    def enrolment(self, user: str) -> Enrolment | None:
        with reachable():
            raw = self.redis.get(_SECRET + user)
        if raw is None:
            return None
        record: dict[str, Any] = json.loads(raw)
        try:
            secret = self._need_cipher().decrypt(str(record["secret"]).encode()).decode()
        except InvalidToken:
            raise MfaError("this enrolment was sealed with another JIT_MFA_KEY; an admin must reset it") from None
        confirmed_at = record.get("confirmed_at")
        return Enrolment(
            user=user,
            secret=secret,
            confirmed=bool(record.get("confirmed")),
            created_at=datetime.fromisoformat(record["created_at"]),
            confirmed_at=datetime.fromisoformat(confirmed_at) if confirmed_at else None,
        )

    def remove(self, user: str) -> bool:
        """Remove `user`'s enrolment and any proof running; a lockout and its count stay (a reset is no way out)."""
        with reachable(), self.redis.pipeline() as pipe:
            pipe.delete(_SECRET + user)
            pipe.delete(_PROVEN + user)
            return bool(pipe.execute()[0])

    def first_use(self, user: str, step: int) -> bool:
        """True the first time `user`'s code of time step `step` is accepted (held past the drift window)."""
        ttl = STEP_SECONDS * (2 * DRIFT_STEPS + 2)
        with reachable():
            return bool(self.redis.set(f"{_USED}{user}:{step}", 1, nx=True, ex=ttl))

    def attempt(self, user: str, lockout_after: int, lockout: timedelta) -> int | None:
        """Count one try at a code before it is checked: its number since the last good code, 0 when more tries
        are in flight than `lockout_after` allows (it must not be checked), None while `user` is locked out."""
        seconds = max(1, int(lockout.total_seconds()))
        with reachable():
            number = int(self.redis.eval(_ATTEMPT, 2, _FAILS + user, _LOCKED + user, lockout_after, seconds))
        return None if number < 0 else number

    def wrong(self, user: str, number: int, lockout_after: int, lockout: timedelta) -> bool:
        """Try `number` was a wrong code: on the `lockout_after`-th, lock `user` out for `lockout` (ending a proof
        still running). True only for the call that locked."""
        if number < lockout_after:
            return False
        seconds = max(1, int(lockout.total_seconds()))
        with reachable():
            return bool(self.redis.eval(_LOCK, 3, _LOCKED + user, _FAILS + user, _PROVEN + user, seconds))

    def locked_for(self, user: str) -> timedelta | None:
        with reachable():
            ttl = int(self.redis.ttl(_LOCKED + user))
        return timedelta(seconds=ttl) if ttl > 0 else None

    def prove(self, user: str, window: timedelta) -> None:
        """A verified code (or a confirmed enrolment) proves `user` for `window`; wrong codes so far are forgiven."""
        with reachable(), self.redis.pipeline() as pipe:
            pipe.set(_PROVEN + user, 1, ex=max(1, int(window.total_seconds())))
            pipe.delete(_FAILS + user)
            pipe.execute()

    def proven_for(self, user: str) -> timedelta | None:
        with reachable():
            ttl = int(self.redis.ttl(_PROVEN + user))
        return timedelta(seconds=ttl) if ttl > 0 else None

    def status(self, user: str) -> Status:
        return Status(self.enrolment(user), self.locked_for(user), self.proven_for(user))

"""Step-up MFA in Slack: enrolment, status, reset, and the `jit_mfa` modal that unlocks a request or an approval.

A step-up is due when a target `require_mfa` and the person has not proven themselves within
`mfa.window`. Then the command or click opens the `jit_mfa` modal (from its own trigger_id, at
once) whose private_metadata says what the code is for; the act happens only after a valid code,
through the same code path as without MFA, and its record says `mfa: true`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bot.service.common import ENROLMENTS, Reply, altered, enqueue, issued
from jit_lb.access.durations import format_duration
from jit_lb.access.errors import CommandError, JitError, MfaError
from jit_lb.access.mfa import SECRET_GRACE, Enrolment, matching_step, new_secret
from jit_lb.access.policy import Target
from jit_lb.access.requests import target_fields
from jit_lb.access.stepup import EnrollIntent, ResetIntent, StepUpIntent, read_intent
from jit_lb.clock import utcnow
from jit_lb.runtime import Runtime
from slack_out import sentences, views
from slack_out.enrolment import post_enrolment
from slack_out.ids import CallbackId
from slack_out.poster import Notifier
from slack_out.views import View


@dataclass(frozen=True)
class Verified:
    """A code was accepted for `intent`; the caller now does what it unlocks."""

    intent: StepUpIntent
    enrolled: bool = False  # this code confirmed a new enrolment


class MfaService:
    """What the MFA commands and the step-up modal do."""

    def __init__(self, rt: Runtime, notifier: Notifier, clock: Callable[[], datetime] = utcnow) -> None:
        self.rt = rt
        self.notifier = notifier
        self.clock = clock

    # --- /jit mfa ---------------------------------------------------------------------------------

    def command(self, user: str, words: list[str]) -> Reply:
        verb = words[0].lower() if words else "status"
        if verb == "enroll" and len(words) == 1:
            return self.enroll(user)
        if verb == "status" and len(words) == 1:
            return Reply(self.status_text(user))
        if verb == "reset" and len(words) == 2:
            return self.reset(user, words[1])
        raise CommandError("usage: `/jit mfa enroll`, `/jit mfa status`, `/jit mfa reset <@user>` (admins)")

    def enroll(self, user: str) -> Reply:
        """Make a secret (kept encrypted), open the modal for a first code, and DM the URI and its QR code."""
        current = self.rt.mfa.enrolment(user)
        if current is not None and current.confirmed:
            raise CommandError("you are enrolled already; an admin's `/jit mfa reset` allows a new enrolment")
        locked = self.rt.mfa.locked_for(user)
        if locked:  # a reset does not lift a lockout: no new authenticator while it runs
            raise CommandError(f"you are locked out of step-ups for {format_duration(locked)}; enrol after that")
        enrolment = Enrolment(user=user, secret=new_secret(), confirmed=False, created_at=self.clock())
        within = self.rt.policy.mfa.enrol_within
        self.rt.mfa.save(enrolment, expires_in=within + SECRET_GRACE)
        self.rt.mfa.forget_at(user, enrolment.created_at + within)  # a worker cancels it then, if unconfirmed
        text = "Scan the QR code I sent you in a DM (or type its key), then enter the app's first code here."
        view = issued(self.rt, views.mfa_modal(EnrollIntent(), text), user)
        return Reply("Check your DMs from jit-lb for the QR code.", view=view)

    def send_enrolment(self, user: str) -> None:
        """The DM of an enrolment: the `otpauth://` URI and its QR code as a PNG (after the modal is open).

        Each carrier of the secret is remembered at once, for the workers to delete (docs/command-and-slack.md).
        A part Slack refuses here (its rate limit) is never handed on with its text: a worker posts it, reading
        the secret from Redis itself, so that the secret stays out of the queue and its DM is remembered too.
        """
        within = self.rt.policy.mfa.enrol_within
        missing = post_enrolment(self.rt.mfa, self.notifier.undeferred(), user, within)
        if missing:
            enqueue(
                self.rt.notices,
                "send_enrolment",
                user,
                ",".join(missing),
                job_id=f"send-mfa-{user}-{int(self.clock().timestamp())}",
                module=ENROLMENTS,
            )
        current = self.rt.mfa.enrolment(user)
        if current is None or current.confirmed:  # confirmed (or gone) while the DM was on its way
            self._forget_now(user)

    def status_text(self, user: str) -> str:
        status = self.rt.mfa.status(user)
        if status.enrolment is None:
            locked = status.locked_for
            if locked:
                return (
                    f"You are not enrolled for step-up MFA, and locked out of step-ups for {format_duration(locked)} "
                    "after too many wrong codes; `/jit mfa enroll` works once that is over."
                )
            return "You are not enrolled for step-up MFA. `/jit mfa enroll` sets it up."
        parts = [
            "Enrolled" if status.enrolment.confirmed else "Enrolment started but not confirmed with a first code",
        ]
        if status.proven_for:
            parts.append(f"a code proves you for {format_duration(status.proven_for)} more")
        if status.locked_for:
            parts.append(f"locked out of step-ups for {format_duration(status.locked_for)} after too many wrong codes")
        return "; ".join(parts) + "."

    def reset(self, admin: str, who: str) -> Reply:
        """`/jit mfa reset`: another person's enrolment, by an admin who steps up first (docs: Step-up MFA).

        An admin may not reset their own (their Slack session alone would then be enough to enrol a new
        authenticator and approve); the step-up modal opens unless a code proves the admin now.
        """
        if not self.rt.approvers.is_admin(admin):
            raise CommandError("only an admin of jit-lb (`admins` in the policy) can reset an enrolment")
        user = who.strip("<@>").split("|")[0].upper()
        if user[:1] not in {"U", "W"} or not user.isalnum():
            raise CommandError(f"`{who[:40]}` is not a user (`<@U…>` or a user id)")
        if user == admin:
            raise CommandError("you may not reset your own enrolment: ask another admin")
        if self.rt.mfa.proven_for(admin) is None:
            what = f"Resetting <@{user}>'s step-up MFA enrolment asks for a one-time code from you."
            view = self.step_up(admin, ResetIntent(user=user), what)
            return Reply("A reset asks for your own one-time code: enter it in the form that opened.", view=view)
        return Reply(self.do_reset(admin, user))

    def do_reset(self, admin: str, user: str) -> str:
        """Remove `user`'s enrolment after `admin`'s step-up; the person and the approvers are told. A lockout
        stays: a reset is no way around one."""
        if user == admin or not self.rt.approvers.is_admin(admin):
            raise CommandError("only another admin of jit-lb can reset this enrolment")
        self.rt.audit.record("mfa.reset", actor=admin, target=None, user=user, mfa=True)
        existed = self.rt.mfa.remove(user)
        self.notifier.dm(user, sentences.mfa_reset_dm_text(admin))
        self.notifier.post(self.rt.policy.approver_channel, sentences.mfa_reset_post_text(admin, user, existed))
        return f"<@{user}>'s enrolment was {'removed' if existed else 'not there'}; they can `/jit mfa enroll`."

    def operator_reset(self, user: str, why: str) -> str:
        """`python -m bot mfa reset`: the way out when no admin can step up (a lost JIT_MFA_KEY, a sole admin's
        own phone lost), for an operator who holds the processes' environment. Recorded, and told as a reset is."""
        self.rt.audit.record("mfa.reset", actor="operator", target=None, user=user, via="cli", why=why, must=True)
        existed = self.rt.mfa.remove(user)
        self.notifier.dm(user, sentences.mfa_reset_dm_text("operator"))
        self.notifier.post(self.rt.policy.approver_channel, sentences.mfa_operator_reset_post_text(user, why))
        return f"{user}'s enrolment was {'removed' if existed else 'not there'}; they can `/jit mfa enroll`."

    # --- the step-up --------------------------------------------------------------------------------

    def due(self, user: str, target: Target | None) -> bool:
        """Whether `user` must step up before acting on `target` now."""
        return target is not None and target.require_mfa and self.rt.mfa.proven_for(user) is None

    def step_up(self, user: str, intent: StepUpIntent, what: str) -> View:
        """The `jit_mfa` modal for `intent`; MfaError when the person cannot step up (not enrolled, locked out)."""
        enrolment = self.rt.mfa.enrolment(user)
        if enrolment is None or not enrolment.confirmed:
            raise MfaError("this needs a one-time code, and you are not enrolled: `/jit mfa enroll` sets it up")
        locked = self.rt.mfa.locked_for(user)
        if locked:
            raise MfaError(f"you are locked out of step-ups for {format_duration(locked)} after too many wrong codes")
        return issued(self.rt, views.mfa_modal(intent, what), user)

    def verify(self, user: str, metadata: str, code: str) -> dict[str, str] | Verified:
        """A `jit_mfa` submission: errors on the `code` block, or the intent the accepted code unlocks.

        Wrong codes count towards the lockout (and its approvers are told); a code is accepted once;
        an accepted one proves the person for `mfa.window` and is recorded as `mfa.verified`.
        """
        try:
            intent: StepUpIntent | None = read_intent(metadata)
        except ValueError:
            intent = None
        kind = intent.do if intent is not None else "unknown"
        rules = self.rt.policy.mfa
        try:
            refused = self._refuse_form(user, kind, metadata)
            if refused is not None:
                return refused
            enrolment = self.rt.mfa.enrolment(user)
            if enrolment is None or (not enrolment.confirmed and kind != "enroll"):
                return {"code": "you are not enrolled: `/jit mfa enroll` sets it up"}
            if not enrolment.confirmed and self.clock() >= enrolment.created_at + rules.enrol_within:
                return {"code": "this enrolment was not confirmed in time and is cancelled: `/jit mfa enroll` again"}
            number = self.rt.mfa.attempt(user, rules.lockout_after, rules.lockout)
            if number is None:
                locked = self.rt.mfa.locked_for(user) or rules.lockout
                return {"code": f"locked out for {format_duration(locked)} after too many wrong codes"}
            if number == 0:
                self._failed(user, kind, "more codes at once than the tries allowed; not checked")
                return {"code": "too many codes at once; wait a moment and try again"}
            now = self.clock()
            step = matching_step(enrolment.secret, code, now)
            used = step is not None and not self.rt.mfa.first_use(user, step)
            if step is None or used:
                return self._wrong(user, kind, number, used)
            enrolled = kind == "enroll" and not enrolment.confirmed
            if enrolled:
                confirmed = Enrolment(user, enrolment.secret, True, enrolment.created_at, now)
                self.rt.audit.record("mfa.enrolled", actor=user, target=None)
                self.rt.mfa.save(confirmed)
                self._forget_now(user)  # the DM and the QR code have served: they go now
            named = target_fields(getattr(intent, "target", None))
            self.rt.audit.record("mfa.verified", actor=user, **named, purpose=kind)
            self.rt.mfa.prove(user, rules.window)
        except JitError as err:
            return {"code": sentences.error_reply(err, bare=True)}
        assert intent is not None  # a form that says nothing was refused above
        return Verified(intent, enrolled)

    def _refuse_form(self, user: str, kind: str, metadata: str) -> dict[str, str] | None:
        """Errors for a `jit_mfa` form jit-lb did not open for `user` (recorded); None when it did."""
        why = altered(self.rt, CallbackId.MFA, metadata, user) if kind != "unknown" else "it says nothing"
        if why is None:
            return None
        self.rt.audit.record(
            "mfa.failed",
            actor=user,
            target=None,
            purpose=kind[:20],
            why=f"a form refused: {why}",
            form=metadata[:300],
            must=True,
        )
        return {"code": why}

    def _wrong(self, user: str, kind: str, number: int, used: bool) -> dict[str, str]:
        """A wrong (or used) code on try `number`: recorded, and on the last try allowed, the lockout (told once)."""
        rules = self.rt.policy.mfa
        # A code used already counts as a wrong one: replaying a code seen over a shoulder is a guess too.
        locked_now = self.rt.mfa.wrong(user, number, rules.lockout_after, rules.lockout)
        self._failed(user, kind, "a code that was used already" if used else "a wrong code", locked=locked_now)
        if locked_now:
            self._tell_lockout(user)
        if number >= rules.lockout_after:
            return {"code": f"wrong code; you are locked out for {format_duration(rules.lockout)}"}
        if used:
            return {"code": "that code was used already; wait for the next one"}
        return {"code": f"wrong code ({rules.lockout_after - number} tries left)"}

    def _forget_now(self, user: str) -> None:
        """Have a worker delete the Slack messages and files that carried `user`'s secret, at once."""
        now = self.clock()
        self.rt.mfa.forget_at(user, now)
        # The workers' loop also takes it within a second: the job only saves that second.
        enqueue(
            self.rt.notices,
            "forget_enrolment",
            user,
            job_id=f"forget-mfa-{user}-{int(now.timestamp())}",
            module=ENROLMENTS,
        )

    def _failed(self, user: str, kind: str, why: str, locked: bool = False) -> None:
        self.rt.audit.record("mfa.failed", actor=user, target=None, purpose=kind, why=why, locked=locked, must=True)

    def _tell_lockout(self, user: str) -> None:
        """Approvers hear of a lockout: it may be someone guessing codes in a stolen Slack session."""
        channel = self.rt.policy.approver_channel
        rules = self.rt.policy.mfa
        self.notifier.post(
            channel,
            f":rotating_light: <@{user}> is locked out of step-ups for {format_duration(rules.lockout)} after "
            f"{rules.lockout_after} wrong codes. If that was not them, their Slack session may be someone else's.",
        )

"""The Web API client of both processes: every post, update, DM and upload; a failed post never loses state."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler

from jit_lb.access.policy import Policy
from jit_lb.access.requests import AccessRequest, Extension
from jit_lb.settings import Settings
from slack_out import cards, sentences
from slack_out.limits import Message

log = structlog.get_logger("jit_lb.notify")


# A call Slack refused for its rate limit, handed on rather than waited out: (method, its arguments, Retry-After s).
Defer = Callable[[str, dict[str, Any], float], None]


def web_client(settings: Settings, *, wait_on_rate_limits: bool = True) -> WebClient:
    """One WebClient a process, that retries 5xx, and 429s after Slack's Retry-After unless told not to wait (the
    web: its threads answer people, and a call Slack rate-limits is handed to the workers instead, see Defer)."""
    client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, timeout=10)
    if wait_on_rate_limits:
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=5))
    client.retry_handlers.append(ServerErrorRetryHandler(max_retry_count=3))
    return client


def call(client: WebClient, method: str, defer: Defer | None = None, **kwargs: Any) -> dict[str, Any] | None:
    """Call the Web API; on failure log it and return None, so the caller's state change stands. A 429 goes to
    `defer`, when given, with Slack's Retry-After."""
    try:
        response = client.api_call(method, json=kwargs)
    except SlackApiError as err:
        retry_after = _retry_after(err)
        if retry_after is not None and defer is not None:
            log.info("slack rate-limited a call; handed on", method=method, retry_after=retry_after)
            defer(method, kwargs, retry_after)
            return None
        # Slack says why it refused blocks in `errors`; the log keeps it for whoever reads why a post is missing.
        why = err.response.get("errors") if isinstance(err.response.data, dict) else None
        log.error("slack refused a call", method=method, channel=kwargs.get("channel"), error=str(err), errors=why)
        return None
    except (SlackClientError, OSError) as err:
        log.error("slack call failed", method=method, channel=kwargs.get("channel"), error=str(err))
        return None
    return dict(response.data) if isinstance(response.data, dict) else None


def _retry_after(err: SlackApiError) -> float | None:
    """The seconds Slack asks to wait when it refused a call for its rate limit (HTTP 429); None otherwise."""
    response = err.response
    if response.status_code != 429:
        return None
    headers = {str(name).lower(): value for name, value in (response.headers or {}).items()}
    value = headers.get("retry-after")
    text = value[0] if isinstance(value, list) and value else value
    try:
        return max(1.0, float(str(text)))
    except (TypeError, ValueError):
        return 1.0


class Notifier:
    """Every message jit-lb sends.

    With `defer` (the web), a call Slack rate-limits is handed to it (a worker makes it after Retry-After) instead of
    waited out on the caller's thread; without (the workers), the client waits as Slack asks.
    """

    def __init__(self, client: WebClient, policy: Callable[[], Policy], defer: Defer | None = None) -> None:
        self.client = client
        self._policy = policy  # the policy in force, which a SIGHUP may replace
        self.defer = defer

    @property
    def policy(self) -> Policy:
        return self._policy()

    def undeferred(self) -> Notifier:
        """This notifier without `defer`: a call Slack rate-limits fails here (None) instead of being handed on with
        its arguments, for a message that must not sit in the queue (an enrolment's secret)."""
        return Notifier(self.client, self._policy)

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any] | None:
        return call(self.client, method, self.defer, **kwargs)

    def post_card(self, request: AccessRequest, channel: str, approvers: Sequence[str] | None = None) -> str | None:
        target = self.policy.target_for(request.target)
        card = cards.approval_card(request, target, approvers)
        return self._posted(channel, card.text, card.blocks)

    def _posted(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None) -> str | None:
        """Post a message in `channel`: its ts, or None when Slack refused it."""
        extra: dict[str, Any] = {"blocks": blocks} if blocks is not None else {}
        answer = self._call("chat.postMessage", channel=channel, text=text, **extra)
        return str(answer["ts"]) if answer else None

    def card(self, request: AccessRequest, approvers: Sequence[str] | None = None) -> Message:
        """The request's card as its state says now; `approvers`, who may approve it, named while it is pending."""
        return cards.request_card(request, self.policy.target_for(request.target), approvers)

    def update_card(self, request: AccessRequest, approvers: Sequence[str] | None = None) -> Message | None:
        """Edit the request's card to `request`'s state; what it was sent, or None when it has no card."""
        if request.card_channel is None or request.card_ts is None:
            return None
        message = self.card(request, approvers)
        self._call("chat.update", channel=request.card_channel, ts=request.card_ts, **asdict(message))
        return message

    def card_of_several(self, parts: Sequence[AccessRequest], approvers: Mapping[str, Sequence[str]]) -> Message:
        """The card of a request of several targets as its parts' state says now (cards.group_card)."""
        policy = self.policy
        return cards.group_card(parts, {part.target: policy.target_for(part.target) for part in parts}, approvers)

    def post_card_of_several(
        self, parts: Sequence[AccessRequest], channel: str, approvers: Mapping[str, Sequence[str]]
    ) -> str | None:
        """Post the card of a request of several targets in one approver channel; its ts, or None when refused."""
        message = self.card_of_several(parts, approvers)
        return self._posted(channel, message.text, message.blocks)

    def update_card_of_several(
        self, parts: Sequence[AccessRequest], card: tuple[str, str], approvers: Mapping[str, Sequence[str]]
    ) -> Message:
        """Edit one card of a request of several targets to its parts' state; what it was sent."""
        message = self.card_of_several(parts, approvers)
        self._call("chat.update", channel=card[0], ts=card[1], **asdict(message))
        return message

    def post_extension_of_several(self, parts: Sequence[AccessRequest], channel: str) -> str | None:
        """Post the one extension card of targets of a request of several in `channel`; its ts, or None."""
        message = cards.extension_of_several(parts)
        return self._posted(channel, message.text, message.blocks)

    def update_extension_of_several(self, parts: Sequence[AccessRequest], card: tuple[str, str]) -> Message:
        """Edit an extension card of targets of a request of several to their state; what it was sent."""
        message = cards.extension_of_several(parts)
        self._call("chat.update", channel=card[0], ts=card[1], **asdict(message))
        return message

    def post_breakglass_card(
        self, request: AccessRequest, channel: str, approvers: list[str], again: bool
    ) -> str | None:
        """The review card of a break-glass grant, mentioning its approvers; its ts, or None when Slack refused."""
        card = cards.breakglass_card(request, approvers, again)
        return self._posted(channel, card.text, card.blocks)

    def post_extension_card(self, request: AccessRequest, channel: str) -> str | None:
        if request.extension is None:
            return None
        card = cards.extension_card(request, request.extension)
        return self._posted(channel, card.text, card.blocks)

    def update_extension_card(self, request: AccessRequest, extension: Extension | None) -> Message | None:
        """Edit an extension's card to its state in `request`; what it was sent, or None when it has no card."""
        if extension is None or extension.card_channel is None or extension.card_ts is None:
            return None
        message = cards.extension_card(request, extension)
        self._call("chat.update", channel=extension.card_channel, ts=extension.card_ts, **asdict(message))
        return message

    def post_parent(self, request: AccessRequest, channel: str) -> str | None:
        return self._posted(channel, sentences.thread_parent_text(request))

    def thread(self, request: AccessRequest, text: str, summary: list[dict[str, Any]] | None = None) -> None:
        """A reply in the request's audit thread."""
        if request.thread_channel is None or request.thread_ts is None:
            log.warning("no audit thread for request", request_id=request.id)
            return
        extra: dict[str, Any] = {"blocks": summary} if summary else {}
        self._call("chat.postMessage", channel=request.thread_channel, thread_ts=request.thread_ts, text=text, **extra)

    def post(self, channel: str, text: str) -> None:
        """A plain message in a channel (a lockout for the approvers, say)."""
        self._call("chat.postMessage", channel=channel, text=text)

    def dm(self, user: str, text: str, blocks: list[dict[str, Any]] | None = None) -> tuple[str, str] | None:
        """A direct message: chat.postMessage to the user id opens the DM with the app. Where it landed (the DM's
        channel id and the message's ts, what chat.delete takes), or None when Slack refused it."""
        extra: dict[str, Any] = {"blocks": blocks} if blocks else {}
        answer = self._call("chat.postMessage", channel=user, text=text, **extra)
        if not answer or not answer.get("channel") or not answer.get("ts"):
            return None
        return str(answer["channel"]), str(answer["ts"])

    def send_file(self, user: str, content: bytes, filename: str, title: str, comment: str) -> str | None:
        """Share a file with `user` in their DM with the app (files.uploadV2 wants the DM's channel id); its file id,
        or None when Slack refused it."""
        opened = self._call("conversations.open", users=user)
        channel = opened.get("channel", {}).get("id") if opened else None
        if not channel:
            return None
        try:
            answer = self.client.files_upload_v2(
                channel=str(channel), content=content, filename=filename, title=title, initial_comment=comment
            )
        except (SlackApiError, SlackClientError, OSError) as err:
            log.error("slack file upload failed", user=user, filename=filename, error=str(err))
            return None
        uploaded = answer.get("files") or [answer.get("file") or {}]
        file_id = uploaded[0].get("id") if uploaded and isinstance(uploaded[0], dict) else None
        return str(file_id) if file_id else None

    def delete_message(self, channel: str, ts: str) -> bool:
        """chat.delete of a message the app posted; True once it is gone (already gone counts)."""
        return self._delete("chat.delete", {"message_not_found"}, channel=channel, ts=ts)

    def delete_file(self, file_id: str) -> bool:
        """files.delete of a file the app uploaded; True once it is gone (already gone counts)."""
        return self._delete("files.delete", {"file_not_found", "file_deleted"}, file=file_id)

    def _delete(self, method: str, gone: set[str], **kwargs: Any) -> bool:
        try:
            self.client.api_call(method, json=kwargs)
        except SlackApiError as err:
            error = err.response.get("error") if isinstance(err.response.data, dict) else None
            if error in gone:
                return True
            log.error("slack refused a delete", method=method, error=str(error))
            return False
        except (SlackClientError, OSError) as err:
            log.error("slack delete failed", method=method, error=str(err))
            return False
        return True

    def email_of(self, user: str) -> str | None:
        """The e-mail in a person's Slack profile (users.info, scope users:read.email), or None."""
        answer = self._call("users.info", user=user)
        profile = ((answer or {}).get("user") or {}).get("profile") or {}
        email = profile.get("email")
        return email if isinstance(email, str) and email else None

    def publish_home(self, user: str, view: dict[str, Any]) -> float | None:
        """The user's App Home tab (views.publish). When Slack rate-limits it, the seconds it asks to wait (the caller
        publishes again then, the home as it is by then); None once published, or refused otherwise (logged)."""
        limited: list[float] = []
        call(self.client, "views.publish", lambda _, __, after: limited.append(after), user_id=user, view=view)
        return limited[0] if limited else None

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str | None:
        """Open a modal (views.open); its view id, or None when Slack refused (an expired trigger, say)."""
        answer = self._call("views.open", trigger_id=trigger_id, view=view)
        return str(answer["view"]["id"]) if answer and isinstance(answer.get("view"), dict) else None

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        self._call("chat.postEphemeral", channel=channel, user=user, text=text)

    def post_checkpoint(self, record: dict[str, Any]) -> None:
        """An `audit.checkpoint` in the audit channel (else the approver channel): a witness the log's editors cannot
        edit, written CHAIN:SEQ:HASH as `audit verify --checkpoint` takes it. A chain's start also names the
        head it continues from, or the chain it replaces (whose last records a cut would have removed)."""
        mark = f"{record['chain']}:{record['seq']}:{record['hash']}"
        reason = record.get("reason", "interval")
        text = (
            f":lock: Audit checkpoint ({reason}) of chain `{record['chain']}`: "
            f"seq {record['seq']}, hash `{record['hash']}`."
        )
        marks = [mark]
        if reason == "start":
            previous = record.get("previous_chain")
            if previous is None:
                text += f" The chain starts ({record.get('start', 'new')}); no chain was kept in its place before."
            elif previous == record["chain"]:
                text += (
                    f" It continues from seq {record['previous_seq']}, hash `{record['previous_hash']}` "
                    f"({record.get('start')})."
                )
            else:
                text += (
                    f" It replaces chain `{previous}`, last kept at seq {record['previous_seq']}, hash "
                    f"`{record['previous_hash']}` ({record.get('start')})."
                )
                if record.get("previous_seq"):
                    marks.append(f"{previous}:{record['previous_seq']}:{record['previous_hash']}")
        options = " ".join(f"--checkpoint {m}" for m in marks)
        text += f" Check a copy of the log against it with `python -m bot audit verify {options} FILE…`"
        self._call("chat.postMessage", channel=self.policy.audit_channel or self.policy.approver_channel, text=text)

"""What a step-up's one-time code unlocks: one typed intent a kind, read once from the modal's metadata.

The `jit_mfa` modal carries its intent in `private_metadata` as JSON (`{"do": "request", ...}`); it is
read back here, at the edge, into one of these models, and the code that acts on it trusts the fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter

from jit_lb.access.durations import format_duration
from jit_lb.access.policy import Duration

# A duration as the modal's metadata carries it: "30m", read back into a timedelta.
SentDuration = Annotated[Duration, PlainSerializer(format_duration, return_type=str)]


class _Intent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EnrollIntent(_Intent):
    """The first code of an enrolment confirms it."""

    do: Literal["enroll"] = "enroll"


class RequestIntent(_Intent):
    """A request on a target that requires MFA, made once the code is accepted."""

    do: Literal["request"] = "request"
    target: str
    duration: SentDuration | None = None
    ip: str | None = None
    reason: str
    channel: str | None = None
    at: str | None = None  # `--at` as typed: the request reads it against the clock when it is made


class ApproveIntent(_Intent):
    """An approval (from a card at `card`, or from the App Home when None), counted with MFA."""

    do: Literal["approve"] = "approve"
    request: str
    card: tuple[str, str] | None = None


class ExtendIntent(_Intent):
    """An extension of a grant on a target that requires MFA."""

    do: Literal["extend"] = "extend"
    request: str
    duration: SentDuration
    reason: str


class BreakGlassIntent(_Intent):
    """A break-glass grant on a target that requires MFA."""

    do: Literal["breakglass"] = "breakglass"
    target: str
    duration: SentDuration
    reason: str


class ResetIntent(_Intent):
    """An admin's reset of `user`'s enrolment, which asks the admin's own code."""

    do: Literal["reset"] = "reset"
    user: str


class LockdownOffIntent(_Intent):
    """An admin's lifting of a lockdown, which asks the admin's own code."""

    do: Literal["lockdown_off"] = "lockdown_off"


StepUpIntent = Annotated[
    EnrollIntent | RequestIntent | ApproveIntent | ExtendIntent | BreakGlassIntent | ResetIntent | LockdownOffIntent,
    Field(discriminator="do"),
]
_READER: TypeAdapter[StepUpIntent] = TypeAdapter(StepUpIntent)


def read_intent(metadata: str) -> StepUpIntent:
    """The intent a modal's metadata carries; ValueError when it is not one (pydantic's ValidationError is one)."""
    return _READER.validate_json(metadata)


def intent_metadata(intent: StepUpIntent) -> dict[str, object]:
    """The intent as the modal's metadata carries it (JSON-ready)."""
    return intent.model_dump(mode="json", exclude_none=True)

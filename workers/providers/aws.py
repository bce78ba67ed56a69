"""What the AWS providers share: clients in botocore's `standard` retry mode, tags as a dict, and errors in words."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jit_lb.access.errors import ProviderError

# A client's connections: enough for the calls a provider makes side by side (aws_alb's DELETE_THREADS and more).
MAX_CONNECTIONS = 32
RETRY_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=20,
    max_pool_connections=MAX_CONNECTIONS,
)


@functools.cache
def client(service: str, region: str | None = None) -> Any:
    """A shared boto3 client (clients are thread-safe); endpoint and credentials from the environment."""
    return boto3.session.Session().client(service, region_name=region, config=RETRY_CONFIG)  # type: ignore[call-overload]


def tag_map(tags: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """AWS's tag list (`[{"Key": …, "Value": …}]`) as key -> value."""
    return {str(tag["Key"]): str(tag.get("Value", "")) for tag in tags}


def forwarded_to(actions: Iterable[Mapping[str, Any]]) -> list[str]:
    """The target groups that listener or rule `actions` forward to, plain or weighted (ForwardConfig), once each."""
    groups: list[str] = []
    for action in actions:
        if action.get("Type") != "forward":
            continue
        if action.get("TargetGroupArn"):
            groups.append(str(action["TargetGroupArn"]))
        forward = action.get("ForwardConfig") or {}
        groups.extend(
            str(group["TargetGroupArn"]) for group in forward.get("TargetGroups", []) if group.get("TargetGroupArn")
        )
    return list(dict.fromkeys(groups))


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _provider_error(err: ClientError | BotoCoreError, action: str, what: str) -> ProviderError:
    """Turn a botocore error into a sentence: the AWS code, the action, and the object it was about."""
    if isinstance(err, ClientError):
        code = _error_code(err)
        message = str(err.response.get("Error", {}).get("Message", "")).strip()
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
            return ProviderError(f"AccessDenied on {action} for {what}: the worker's AWS role lacks this permission")
        detail = f": {message}" if message else ""
        return ProviderError(f"{code} on {action} for {what}{detail}")
    return ProviderError(f"{action} for {what} failed: {err}")


@dataclass
class Passed:
    """The expected error code a call ended with, if any."""

    code: str | None = None

    def __bool__(self) -> bool:
        return self.code is not None


def _no_explanation(_: str) -> ProviderError | None:
    return None


@contextmanager
def translated(
    action: str,
    where: str,
    passing: Iterable[str] = (),
    explain: Callable[[str], ProviderError | None] = _no_explanation,
) -> Iterator[Passed]:
    """Turn botocore errors into ProviderErrors in words; codes in `passing` are expected and recorded instead.

    `explain(code)` may give a provider's own sentence for a code; otherwise the generic one is used.
    """
    passed = Passed()
    try:
        yield passed
    except ClientError as err:
        code = _error_code(err)
        if code in passing:
            passed.code = code
            return
        raise (explain(code) or _provider_error(err, action, where)) from None
    except BotoCoreError as err:
        raise _provider_error(err, action, where) from None

"""Property-based tests: the command parser and the policy loader never crash and never widen access."""

from __future__ import annotations

import contextlib
import ipaddress
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jit_lb.access.commands import RequestCommand, build_request, parse_command
from jit_lb.access.errors import CommandError, PolicyError
from jit_lb.access.policy import host_address, parse_policy
from tests.helpers import valid

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    {**valid(), "targets": {"lb-prod": {**valid()["targets"]["lb-prod"], "allow_requester_ip": True}}}
)
words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@given(st.lists(words, max_size=8).map(" ".join))
def test_parser_never_crashes(text: str) -> None:
    """Any text either parses or is refused with a CommandError; nothing else escapes."""
    with contextlib.suppress(CommandError):
        parse_command(text)


@given(st.integers(min_value=1, max_value=10**7), st.sampled_from(["s", "m", "h", "d"]))
def test_duration_never_outside_the_target_limits(amount: int, unit: str) -> None:
    """A request is built only when its duration lies within min_duration and max_duration."""
    target = POLICY.targets["lb-prod"]
    try:
        command = parse_command(f"request lb-prod {amount}{unit} a reason")
        assert isinstance(command, RequestCommand)
        request = build_request(POLICY, "U0DEV1", command, NOW)("jit-abcdef")
    except CommandError:
        return
    assert target.min_duration <= request.duration <= target.max_duration


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.ip_addresses().map(str), st.from_regex(r"\A[0-9a-f:./]{1,43}\Z")))
def test_requester_ip_is_always_a_single_host(text: str) -> None:
    """`--ip` yields a /32 or /128 host, never a network, never 0.0.0.0 or ::."""
    command = RequestCommand("lb-prod", timedelta(minutes=5), text, "why")
    try:
        request = build_request(POLICY, "U0DEV1", command, NOW)("jit-abcdef")
    except CommandError:
        return
    assert request.cidr is not None
    network = ipaddress.ip_network(request.cidr)
    assert network.num_addresses == 1
    assert not network.network_address.is_unspecified
    assert str(host_address(text)) == request.cidr


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_policy_never_accepts_an_internet_wide_source(address: ipaddress.IPv4Address, prefix: int) -> None:
    """A principal's source_cidr wider than /8 (IPv4) or /32 (IPv6) is refused at load."""
    network = ipaddress.ip_network(f"{address}/{min(prefix, address.max_prefixlen)}", strict=False)
    data = valid()
    data["principals"]["U0DEV1"]["source_cidr"] = str(network)
    floor = 8 if network.version == 4 else 32
    try:
        policy = parse_policy(data)
    except PolicyError:
        assert network.prefixlen < floor
        return
    assert network.prefixlen >= floor
    assert policy.principals["U0DEV1"].source_cidr == str(network)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
        max_leaves=10,
    )
)
def test_policy_loader_never_crashes(data: object) -> None:
    """Any YAML-shaped data is a valid policy or a PolicyError with a message; never another exception."""
    try:
        parse_policy(data)
    except PolicyError as err:
        message = str(err)
        assert message.startswith("policy: ")


@given(st.text(max_size=60), st.booleans())
def test_requester_ip_text_is_an_address_and_nothing_more(text: str, allow_private: bool) -> None:
    """Whatever is typed after `--ip`, an accepted value is one host, written back in ipaddress's own form."""
    try:
        network = host_address(text, allow_private=allow_private)
    except ValueError as err:
        refusal = str(err)
        assert "`" in refusal  # the refusal quotes what was typed
        return
    assert network.num_addresses == 1
    assert set(str(network)) <= set("0123456789abcdef.:/")
    assert allow_private or network.network_address.is_global


@given(st.ip_addresses())
def test_only_global_addresses_pass_without_allow_private_ip(address: ipaddress.IPv4Address) -> None:
    """Without `allow_private_ip`, loopback, private, link-local, shared and documentation addresses are refused."""
    try:
        host_address(str(address))
    except ValueError:
        assert not address.is_global or address.is_multicast
        return
    assert address.is_global

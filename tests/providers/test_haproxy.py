"""The HAProxy ACL provider against a real haproxy: real requests from 127.0.0.7 are let in, then shut out."""

from __future__ import annotations

import http.client
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
import redis

from devtools.haproxy import HaproxyServer, http_status
from devtools.ports import ask, connect, free_port
from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import HaproxyAclGrant
from workers.providers import markers
from workers.providers.base import GrantOrder, ManagedObject, objects_of
from workers.providers.haproxy import HaproxyAclProvider, RuntimeApi

pytestmark = [
    pytest.mark.haproxy,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed"),
]

NOW = datetime.now(UTC).replace(microsecond=0)
SOURCE = "127.0.0.7"
CIDR = f"{SOURCE}/32"


@pytest.fixture(name="haproxy_server", scope="module")
def fixture_haproxy_server() -> Iterator[HaproxyServer]:
    """One haproxy for the module; each test starts from an empty ACL."""
    with HaproxyServer() as server:
        yield server


@pytest.fixture(name="haproxy")
def fixture_haproxy(haproxy_server: HaproxyServer) -> HaproxyServer:
    RuntimeApi(haproxy_server.runtime_api_unix).command(f"clear acl {haproxy_server.acl_file}")
    return haproxy_server


@pytest.fixture(name="spec")
def fixture_spec(haproxy: HaproxyServer) -> HaproxyAclGrant:
    return HaproxyAclGrant(kind="haproxy_acl", runtime_api=haproxy.runtime_api_unix, acl=haproxy.acl_file)


@pytest.fixture(name="provider")
def fixture_provider(spec: HaproxyAclGrant, redis_client: redis.Redis) -> HaproxyAclProvider:
    return HaproxyAclProvider(spec, redis_client)


def order(spec: HaproxyAclGrant, request_id: str, minutes: int = 10, cidr: str = CIDR) -> GrantOrder:
    return GrantOrder(request_id, "lb-haproxy", spec, NOW + timedelta(minutes=minutes), cidr=cidr)


def status_from(haproxy: HaproxyServer, source: str = SOURCE) -> int:
    """The status of one request on a fresh connection from `source`."""
    return http_status(haproxy.port, source, timeout=10)


def acl_entries(haproxy: HaproxyServer) -> list[str]:
    answer = RuntimeApi(haproxy.runtime_api_unix).run(f"show acl {haproxy.acl_file}")
    return [line.split(" ", 1)[1] for line in answer.splitlines()]


def the_entry(provider: HaproxyAclProvider, pattern: str = CIDR) -> ManagedObject:
    return next(obj for obj in provider.list_managed() if obj.ref == pattern)


@pytest.mark.parametrize("form", ["unix", "tcp"])
def test_grant_lets_the_source_in_and_drop_shuts_it_out(
    haproxy: HaproxyServer, redis_client: redis.Redis, form: str
) -> None:
    """Over either runtime API form: 403 before the grant, 200 during it, 403 after the drop."""
    api = haproxy.runtime_api_unix if form == "unix" else haproxy.runtime_api_tcp
    spec = HaproxyAclGrant(kind="haproxy_acl", runtime_api=api, acl=haproxy.acl_file)
    provider = HaproxyAclProvider(spec, redis_client)
    assert status_from(haproxy) == 403

    objects = provider.apply(order(spec, "jit-aaaaaa"))

    assert [obj.ref for obj in objects] == [CIDR]
    assert {"jit-aaaaaa"} == objects[0].request_ids()
    assert NOW + timedelta(minutes=10) == objects[0].ends_at
    assert acl_entries(haproxy) == [CIDR]
    assert status_from(haproxy) == 200
    assert status_from(haproxy, source="127.0.0.8") == 403
    assert provider.drop(objects[0], {"jit-aaaaaa"}) is True
    assert acl_entries(haproxy) == []
    assert status_from(haproxy) == 403
    assert provider.list_managed() == []


def test_keep_alive_connection_gets_no_more_answers_after_drop(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """A keep-alive connection opened during the grant gets no further 200 once the entry is dropped."""
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    with closing(connect(haproxy.port, SOURCE)) as conn:
        assert ask(conn) == 200
        assert ask(conn) == 200
        provider.drop(obj, {"jit-aaaaaa"})
        try:
            status: int | None = ask(conn)
        except (http.client.HTTPException, ConnectionError):
            status = None
    # HAProxy re-checks `http-request` rules on each request of a kept-alive connection.
    assert status in {403, None}


def test_stream_open_at_drop_is_cut(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """A response still streaming from the source when its entry is dropped is cut at once."""
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    with closing(connect(haproxy.port, SOURCE)) as conn:
        conn.request("GET", "/stream")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read(5) == b"tick."
        started = time.monotonic()
        provider.drop(obj, {"jit-aaaaaa"})
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
        assert time.monotonic() - started < 5


def test_apply_twice_makes_one_entry_and_one_lease(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """A retried grant job neither duplicates the ACL entry nor the lease."""
    provider.apply(order(spec, "jit-aaaaaa"))
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))

    assert acl_entries(haproxy) == [CIDR]
    assert len(obj.leases) == 1


def test_overlapping_grants_share_the_entry_until_the_last_is_dropped(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """Two grants for one CIDR share one entry; dropping the first keeps access for the second."""
    provider.apply(order(spec, "jit-aaaaaa", minutes=5))
    [obj] = provider.apply(order(spec, "jit-bbbbbb", minutes=20))
    assert {"jit-aaaaaa", "jit-bbbbbb"} == obj.request_ids()
    assert acl_entries(haproxy) == [CIDR]

    assert provider.drop(obj, {"jit-aaaaaa"}) is False
    assert status_from(haproxy) == 200
    assert {"jit-bbbbbb"} == the_entry(provider).request_ids()

    [last] = objects_of(provider, "jit-bbbbbb")
    assert provider.drop(last, {"jit-bbbbbb"}) is True
    assert status_from(haproxy) == 403
    assert acl_entries(haproxy) == []


def test_dropping_what_is_gone_succeeds(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """Dropping an entry someone already deleted by hand, or twice, is a success."""
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    RuntimeApi(haproxy.runtime_api_unix).command(f"del acl {haproxy.acl_file} {CIDR}")

    assert provider.drop(obj, {"jit-aaaaaa"}) is True
    assert provider.drop(obj, {"jit-aaaaaa"}) is True
    assert provider.list_managed() == []


def test_restore_after_reload_puts_back_only_running_leases(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """After a reload drops runtime entries, restore re-adds those whose lease still runs, not expired ones."""
    provider.apply(order(spec, "jit-aaaaaa", minutes=10))
    provider.apply(order(spec, "jit-bbbbbb", minutes=-1, cidr="127.0.0.8/32"))

    haproxy.reload()

    assert acl_entries(haproxy) == []
    assert status_from(haproxy) == 403
    assert sorted(obj.ref for obj in provider.list_managed()) == ["127.0.0.7/32", "127.0.0.8/32"]
    assert provider.restore(NOW) == [CIDR]
    assert acl_entries(haproxy) == [CIDR]
    assert status_from(haproxy) == 200
    assert status_from(haproxy, source="127.0.0.8") == 403
    assert provider.restore(NOW) == []


def test_revoke_while_lost_clears_the_book(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """A grant revoked while HAProxy had lost its entry leaves nothing for restore to bring back."""
    provider.apply(order(spec, "jit-aaaaaa"))
    haproxy.reload()

    for obj in objects_of(provider, "jit-aaaaaa"):
        assert provider.drop(obj, {"jit-aaaaaa"}) is True

    assert provider.restore(NOW) == []
    assert acl_entries(haproxy) == []


def test_hand_added_entry_is_listed_without_leases(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """An entry nobody leased shows up with no leases, and dropping it with none removes it (fail closed)."""
    RuntimeApi(haproxy.runtime_api_tcp).command(f"add acl {haproxy.acl_file} 127.0.0.0/29")

    [obj] = provider.list_managed()

    assert (obj.ref, obj.leases) == ("127.0.0.0/29", ())
    assert status_from(haproxy) == 200
    assert provider.drop(obj, set()) is True
    assert status_from(haproxy) == 403


def test_dropping_a_narrow_entry_keeps_sessions_a_wider_entry_admits(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider
) -> None:
    """A stream from a source that another entry still admits is not cut when a narrower entry goes."""
    [narrow] = provider.apply(order(spec, "jit-aaaaaa"))
    provider.apply(order(spec, "jit-bbbbbb", cidr="127.0.0.0/29"))
    with closing(connect(haproxy.port, SOURCE)) as conn:
        conn.request("GET", "/stream")
        response = conn.getresponse()
        assert response.read(5) == b"tick."
        assert provider.drop(narrow, {"jit-aaaaaa"}) is True
        # A second of ticks, well past anything buffered before the drop.
        assert response.read(60) == b"\ntick." * 10


def test_unreachable_runtime_api_is_a_readable_error(redis_client: redis.Redis, haproxy: HaproxyServer) -> None:
    """A runtime API that is not there fails with a message saying what to check."""
    missing = HaproxyAclGrant(kind="haproxy_acl", runtime_api="unix:/nonexistent/admin.sock", acl=haproxy.acl_file)
    closed = HaproxyAclGrant(kind="haproxy_acl", runtime_api=f"tcp:127.0.0.1:{free_port()}", acl=haproxy.acl_file)

    with pytest.raises(ProviderError, match=r"no socket at /nonexistent/admin.sock: is HAProxy running.*level admin"):
        HaproxyAclProvider(missing, redis_client).list_managed()
    with pytest.raises(ProviderError, match=r"refused the connection: is HAProxy running.*stats socket ipv4@"):
        HaproxyAclProvider(closed, redis_client).apply(order(closed, "jit-aaaaaa"))


def test_unknown_acl_names_the_files_haproxy_loaded(redis_client: redis.Redis, haproxy: HaproxyServer) -> None:
    """An ACL name HAProxy does not know fails with the names it does know."""
    spec = HaproxyAclGrant(kind="haproxy_acl", runtime_api=haproxy.runtime_api_unix, acl="/etc/haproxy/typo.acl")

    with pytest.raises(ProviderError, match=re.escape("no ACL `/etc/haproxy/typo.acl`")) as caught:
        HaproxyAclProvider(spec, redis_client).list_managed()

    assert haproxy.acl_file in str(caught.value)


def test_acl_name_that_would_smuggle_a_command_is_refused(redis_client: redis.Redis, haproxy: HaproxyServer) -> None:
    """An ACL name with `;` or blanks never reaches the runtime API, which would run the rest as commands."""
    spec = HaproxyAclGrant(
        kind="haproxy_acl", runtime_api=haproxy.runtime_api_unix, acl=f"{haproxy.acl_file};clear acl x"
    )

    with pytest.raises(ProviderError, match="cannot be sent to HAProxy's runtime API"):
        HaproxyAclProvider(spec, redis_client).list_managed()


HOSTILE = "fe80::1%x;help;"


def test_a_hostile_source_is_refused_and_nothing_reaches_haproxy(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider, redis_client: redis.Redis
) -> None:
    """An address with a zone id and a `;` is refused by name before any command: the ACL and the book are as before."""
    provider.apply(order(spec, "jit-aaaaaa"))

    with pytest.raises(ProviderError, match=re.escape(f"`{HOSTILE}` as its source: a zone id")):
        provider.apply(order(spec, "jit-bbbbbb", cidr=HOSTILE))

    assert acl_entries(haproxy) == [CIDR]
    assert [obj.ref for obj in provider.list_managed()] == [CIDR]
    assert not [key for key in redis_client.keys("*") if b"%" in key]


@pytest.mark.parametrize(
    ("send", "named"),
    [
        (lambda api, acl: api.add_acl(acl, HOSTILE), f"ACL pattern `{HOSTILE}`"),
        (lambda api, acl: api.del_acl(acl, "127.0.0.7/32 127.0.0.8/32"), "ACL pattern `127.0.0.7/32 127.0.0.8/32`"),
        (lambda api, acl: api.add_acl(f"{acl}\nclear acl {acl}", CIDR), "ACL name `"),
        (lambda api, acl: api.show_acl(f"{acl};prompt"), "ACL name `"),
        (lambda api, acl: api.shutdown_session("0x1;help"), "session id `0x1;help`"),
        (lambda api, acl: api.run(f"show acl {acl};prompt"), "the command `show acl"),
    ],
    ids=["zone-id-and-semicolon", "blank", "newline-in-acl-name", "semicolon-in-acl-name", "session", "raw-line"],
)
def test_the_runtime_api_refuses_an_unsafe_argument_before_connecting(
    haproxy: HaproxyServer, send: Callable[[RuntimeApi, str], object], named: str
) -> None:
    """Each command's arguments are checked before a connection is opened: the error names the argument, not the
    socket (nothing listens at this address), and HAProxy's ACL has no new entry."""
    nowhere = RuntimeApi(f"tcp:127.0.0.1:{free_port()}")

    with pytest.raises(ProviderError, match=re.escape(named)) as refused:
        send(nowhere, haproxy.acl_file)

    assert "cannot be sent to HAProxy's runtime API" in str(refused.value)
    assert acl_entries(haproxy) == []


def test_a_hostile_pattern_sent_to_a_real_haproxy_changes_nothing(haproxy: HaproxyServer) -> None:
    """Against the real runtime API too, the hostile pattern is refused and `show acl` lists no new entry."""
    api = RuntimeApi(haproxy.runtime_api_unix)
    api.add_acl(haproxy.acl_file, CIDR)

    with pytest.raises(ProviderError, match=re.escape(HOSTILE)):
        api.add_acl(haproxy.acl_file, HOSTILE)

    assert acl_entries(haproxy) == [CIDR]


def test_a_command_whose_answer_never_ends_times_out(haproxy: HaproxyServer) -> None:
    """`prompt` keeps the connection open after its answer; the call gives up at its read timeout, not never."""
    api = RuntimeApi(haproxy.runtime_api_unix, read_timeout=1.0)
    started = time.monotonic()

    with pytest.raises(ProviderError, match=r"took longer than 1s to answer `prompt`"):
        api.run("prompt")

    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("written", "read"),
    [("not a request", "not a request"), (b"jit-\xff\xfe", "jit-\ufffd\ufffd")],
    ids=["not-an-id", "not-utf-8"],
)
def test_a_book_lease_with_a_bad_request_id_is_an_anomaly(
    haproxy: HaproxyServer,
    spec: HaproxyAclGrant,
    provider: HaproxyAclProvider,
    redis_client: redis.Redis,
    written: str | bytes,
    read: str,
) -> None:
    """A lease in the Redis book naming no request id makes its entry an anomaly; listing it does not raise."""
    provider.apply(order(spec, "jit-aaaaaa"))
    [key] = [key for key in redis_client.keys("*:lease:*") if key.endswith(CIDR.encode())]
    redis_client.hset(key, written, "2026-11-23T21:00:00Z")

    [listed] = provider.list_managed()

    assert listed.anomaly == f"a lease names `{markers.shown(read)}`, not a request id"
    assert listed.request_ids() == {"jit-aaaaaa", read}


def test_a_hand_added_entry_for_everyone_is_an_anomaly(haproxy: HaproxyServer, provider: HaproxyAclProvider) -> None:
    """An entry no grant could have made (the whole internet) is listed with why; a narrow one is not."""
    api = RuntimeApi(haproxy.runtime_api_unix)
    api.add_acl(haproxy.acl_file, "0.0.0.0/0")
    api.add_acl(haproxy.acl_file, "127.0.0.0/29")

    listed = {obj.ref: obj.anomaly for obj in provider.list_managed()}

    assert listed == {
        "0.0.0.0/0": "its source 0.0.0.0/0 is wider than any grant opens (/8 or narrower)",
        "127.0.0.0/29": "",
    }


def connections_so_far(api: RuntimeApi) -> int:
    """HAProxy's count of connections accepted since it started, the runtime API's own included (`show info`)."""
    (line,) = [line for line in api.run("show info").splitlines() if line.startswith("CumConns:")]
    return int(line.split(":")[1])


def test_drop_all_removes_many_entries_over_one_connection(
    haproxy: HaproxyServer, spec: HaproxyAclGrant, provider: HaproxyAclProvider, redis_client: redis.Redis
) -> None:
    """Twenty entries go in one runtime API connection (as a batch of revokes or a lockdown asks): gone from the
    ACL and the book, and a stream open from one of them cut."""
    objects = [provider.apply(order(spec, f"jit-{n:06d}", cidr=f"127.0.0.{n}/32"))[0] for n in range(8, 27)]
    objects += provider.apply(order(spec, "jit-aaaaaa"))
    api = RuntimeApi(haproxy.runtime_api_unix)
    with closing(connect(haproxy.port, SOURCE)) as conn:
        conn.request("GET", "/stream")
        response = conn.getresponse()
        assert response.read(5) == b"tick."
        before = connections_so_far(api)

        assert provider.drop_all(objects) == 20

        assert connections_so_far(api) - before == 2  # drop_all's one, and this `show info`
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
    assert provider.list_managed() == []
    assert api.show_acl(haproxy.acl_file) == ""

"""The NGINX allow-list provider against a real nginx: real requests from 127.0.0.2 are let in, then shut out."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.haproxy import http_status
from devtools.nginx import NginxServer, nginx_binary
from devtools.ports import ask, connect
from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import NginxAllowlistGrant
from workers.providers import nginx as nginx_provider
from workers.providers.base import GrantOrder, objects_of
from workers.providers.markers import format_time
from workers.providers.nginx import LOCK_NAME, NginxAllowlistProvider

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed"),
]

NOW = datetime.now(UTC).replace(microsecond=0)
SOURCE = "127.0.0.2"
CIDR = f"{SOURCE}/32"


@pytest.fixture(name="nginx_server", scope="module")
def fixture_nginx_server() -> Iterator[NginxServer]:
    """One nginx for the module (worker_shutdown_timeout 2s); each test starts from an empty allow file."""
    with NginxServer(shutdown_timeout="2s") as server:
        yield server


@pytest.fixture(name="nginx")
def fixture_nginx(nginx_server: NginxServer) -> Iterator[NginxServer]:
    Path(nginx_server.allow_file).write_text("", encoding="utf-8")
    nginx_server.extra_file.write_text("", encoding="utf-8")
    nginx_server.wait_gone(nginx_server.reload_by_hand())
    yield nginx_server
    nginx_server.extra_file.write_text("", encoding="utf-8")


@pytest.fixture(name="spec")
def fixture_spec(nginx: NginxServer) -> NginxAllowlistGrant:
    return NginxAllowlistGrant.model_validate(nginx.grant_spec())


@pytest.fixture(name="provider")
def fixture_provider(spec: NginxAllowlistGrant) -> NginxAllowlistProvider:
    return NginxAllowlistProvider(spec, reload_seconds=3)


def order(spec: NginxAllowlistGrant, request_id: str, minutes: int = 10, cidr: str = CIDR) -> GrantOrder:
    return GrantOrder(request_id, "lb-nginx", spec, NOW + timedelta(minutes=minutes), cidr=cidr)


def status_from(nginx: NginxServer, source: str = SOURCE) -> int:
    """The status of one request on a fresh connection from `source`."""
    return http_status(nginx.port, source, timeout=10)


def allow_text(nginx: NginxServer) -> str:
    return Path(nginx.allow_file).read_text(encoding="utf-8")


def break_configuration(nginx: NginxServer) -> None:
    """What someone editing another included file might leave behind."""
    nginx.extra_file.write_text("this is not a directive;\n", encoding="utf-8")


def test_grant_lets_the_source_in_and_drop_shuts_it_out(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """403 before the grant, 200 during it (and 403 for another source), 403 after the drop."""
    assert status_from(nginx) == 403

    objects = provider.apply(order(spec, "jit-aaaaaa"))

    assert [obj.ref for obj in objects] == [CIDR]
    assert {"jit-aaaaaa"} == objects[0].request_ids()
    assert NOW + timedelta(minutes=10) == objects[0].ends_at
    assert status_from(nginx) == 200
    assert status_from(nginx, source="127.0.0.3") == 403
    assert provider.drop(objects[0], {"jit-aaaaaa"}) is True
    assert status_from(nginx) == 403
    assert provider.list_managed() == []
    assert allow_text(nginx) == ""


def test_the_line_carries_its_request_id_and_end(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """One `allow` line, its lease in a comment on the same line, and the lock file beside it."""
    provider.apply(order(spec, "jit-aaaaaa"))

    end = format_time(NOW + timedelta(minutes=10))
    assert f"allow 127.0.0.2/32; # jit-lb: jit-aaaaaa until {end}\n" == allow_text(nginx)
    assert (Path(nginx.allow_file).parent / LOCK_NAME).exists()


def test_a_grant_reloads_nginx(nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider) -> None:
    """The grant is loaded by the same master with new workers, the old ones gone in their time."""
    before = nginx.workers()

    provider.apply(order(spec, "jit-aaaaaa"))

    assert nginx.workers() - before
    assert nginx.master() == int(Path(nginx.pid_file).read_text())


def test_overlapping_grants_share_the_line_until_the_last_is_dropped(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """Two grants for one source share one line with a lease each; dropping the first keeps access for the second."""
    provider.apply(order(spec, "jit-aaaaaa", minutes=5))
    [obj] = provider.apply(order(spec, "jit-bbbbbb", minutes=20))
    assert {"jit-aaaaaa", "jit-bbbbbb"} == obj.request_ids()
    assert len(allow_text(nginx).splitlines()) == 1

    assert provider.drop(obj, {"jit-aaaaaa"}) is False
    assert status_from(nginx) == 200
    [last] = objects_of(provider, "jit-bbbbbb")
    assert {"jit-bbbbbb"} == last.request_ids()

    assert provider.drop(last, {"jit-bbbbbb"}) is True
    assert status_from(nginx) == 403
    assert allow_text(nginx) == ""


def test_apply_twice_makes_one_line_and_one_lease(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """A retried grant job (or an extension) neither duplicates the line nor the lease; the later end wins."""
    provider.apply(order(spec, "jit-aaaaaa", minutes=10))
    [obj] = provider.apply(order(spec, "jit-aaaaaa", minutes=30))

    assert len(allow_text(nginx).splitlines()) == 1
    assert [NOW + timedelta(minutes=30)] == [lease.ends_at for lease in obj.leases]


def test_a_reload_alone_leaves_old_workers_answering(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """What a revoke has to deal with: once NGINX's new workers are up, an old one still answers a kept-alive
    connection from the revoked source (the master tells old workers to stop only 100 ms later)."""
    provider.apply(order(spec, "jit-aaaaaa"))
    answered_late = []
    for _ in range(10):  # the window is NGINX's 100 ms: a loaded machine may miss it now and then
        with closing(connect(nginx.port, SOURCE)) as conn:
            assert ask(conn) == 200
            Path(nginx.allow_file).write_text("", encoding="utf-8")
            old = nginx.reload_by_hand()  # returns once a new worker is up: a bare reload's notion of done
            try:
                answered_late.append(ask(conn))
            except (http.client.HTTPException, ConnectionError):
                answered_late.append(0)
        nginx.wait_gone(old)
        if 200 in answered_late:
            break
        provider.apply(order(spec, "jit-aaaaaa"))
    assert 200 in answered_late


def test_no_request_on_a_kept_alive_connection_is_answered_once_drop_returns(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """A connection that keeps asking across the drop may be answered until drop returns, never after it."""
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    answers: list[tuple[int, float]] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with closing(connect(nginx.port, SOURCE)) as conn:
            while not stop.is_set():
                try:
                    status = ask(conn)
                except (http.client.HTTPException, ConnectionError):
                    conn.close()
                    status = 0  # closed by the old worker: the next request opens a new connection
                answers.append((status, time.monotonic()))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        while not any(status == 200 for status, _ in answers):
            time.sleep(0.01)
        provider.drop(obj, {"jit-aaaaaa"})
        done = time.monotonic()
        while not any(at > done for _, at in answers):
            time.sleep(0.01)
    finally:
        stop.set()
        asker.join(timeout=10)

    assert [status for status, at in answers if at > done and status == 200] == []
    assert 403 in {status for status, at in answers if at > done}


def test_a_download_in_progress_is_cut_by_worker_shutdown_timeout_before_drop_returns(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """A response still streaming to the source when its line is dropped has ended by the time drop returns."""
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10, source_address=(SOURCE, 0)) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: jit\r\n\r\nGET / HTTP/1.1\r\nHost: jit\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 200"

        provider.drop(obj, {"jit-aaaaaa"})

        received = b""
        sock.settimeout(0.5)  # what is left is in the socket's buffer: the connection is closed already
        while chunk := sock.recv(1 << 20):
            received += chunk
    # Cut short, and the request pipelined behind it never answered.
    assert len(received) < 2_000_000
    assert b"HTTP/1.1" not in received


def test_a_configuration_that_does_not_test_is_never_loaded_and_the_grant_rolled_back(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """Someone broke another included file: the grant fails in NGINX's words, the file is as it was, no reload."""
    Path(nginx.allow_file).write_text("# the team's own notes\n", encoding="utf-8")
    break_configuration(nginx)
    workers = nginx.workers()

    with pytest.raises(ProviderError, match=r"`nginx -T` refuses NGINX's configuration: .*unknown directive \"this\""):
        provider.apply(order(spec, "jit-aaaaaa"))

    assert allow_text(nginx) == "# the team's own notes\n"
    assert workers == nginx.workers()
    assert status_from(nginx) == 403


def test_a_revoke_that_cannot_reload_keeps_the_line_for_its_retry(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """The line stays in the file (NGINX still admits the source) so that the retry and the sweep find it."""
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    before = allow_text(nginx)
    break_configuration(nginx)

    with pytest.raises(ProviderError, match="refuses NGINX's configuration"):
        provider.drop(obj, {"jit-aaaaaa"})

    assert before == allow_text(nginx)
    assert [obj] == objects_of(provider, "jit-aaaaaa")
    nginx.extra_file.write_text("", encoding="utf-8")
    assert provider.drop(obj, {"jit-aaaaaa"}) is True
    assert status_from(nginx) == 403


def test_a_reload_nginx_does_not_take_is_rolled_back(
    nginx: NginxServer, spec: NginxAllowlistGrant, tmp_path: Path
) -> None:
    """A pid file naming no NGINX master: the grant fails naming it and the file is as it was."""
    pid_file = tmp_path / "nginx.pid"
    pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
    provider = NginxAllowlistProvider(spec.model_copy(update={"pid_file": str(pid_file)}))

    with pytest.raises(ProviderError, match="not an NGINX master"):
        provider.apply(order(spec, "jit-aaaaaa"))

    assert allow_text(nginx) == ""


def test_a_configuration_without_worker_shutdown_timeout_is_refused(tmp_path: Path) -> None:
    """Without a bound on old workers a revoke could not be finished: the grant is refused, nothing written."""
    with NginxServer(shutdown_timeout=None) as server:
        spec = NginxAllowlistGrant.model_validate(server.grant_spec())
        workers = server.workers()

        with pytest.raises(ProviderError, match="worker_shutdown_timeout"):
            NginxAllowlistProvider(spec).apply(order(spec, "jit-aaaaaa"))

        assert allow_text(server) == ""
        assert workers == server.workers()


def test_an_allow_file_the_configuration_does_not_include_is_refused(nginx: NginxServer) -> None:
    """A file NGINX never reads would grant nothing: refused, naming the include it needs."""
    stray = nginx.prefix / "stray.conf"
    stray.write_text("", encoding="utf-8")
    spec = NginxAllowlistGrant.model_validate({**nginx.grant_spec(), "allow_file": str(stray)})

    with pytest.raises(ProviderError, match=f"does not include {stray}"):
        NginxAllowlistProvider(spec).apply(order(spec, "jit-aaaaaa"))

    assert stray.read_text(encoding="utf-8") == ""


def test_lines_are_read_with_their_leases_and_oddities(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """A forged far end is a lease like any other (the sweep judges it); unmarked and odd lines are anomalies."""
    Path(nginx.allow_file).write_text(
        "# hand-written notes stay\n"
        "allow 127.0.0.2; # jit-lb: jit-forged until 2099-01-01T00:00:00Z\n"
        "allow 10.1.0.0/16;\n"
        "allow all; # jit-lb: jit-wide until 2099-01-01T00:00:00Z\n"
        "allow 127.0.0.9/32; # jit-lb:\n"
        "allow 127.0.0.10/32; # jit-lb: jit-x forever\n",
        encoding="utf-8",
    )

    listed = {obj.ref: obj for obj in provider.list_managed()}

    assert {"127.0.0.2", "all", "127.0.0.9/32", "127.0.0.10/32", "unmarked:10.1.0.0/16"} == set(listed)
    assert listed["127.0.0.2"].conforms
    assert {"jit-forged"} == listed["127.0.0.2"].request_ids()
    assert datetime(2099, 1, 1, tzinfo=UTC) == listed["127.0.0.2"].ends_at
    assert "allows `all`" in listed["all"].anomaly
    assert listed["127.0.0.9/32"].conforms and not listed["127.0.0.9/32"].leases
    assert "jit-x forever" in listed["127.0.0.10/32"].anomaly
    assert "no jit-lb marker" in listed["unmarked:10.1.0.0/16"].anomaly


def test_drop_leaves_other_lines_and_notes_as_they_were(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """Only the dropped line goes; comments, blank lines and others' lines are kept word for word."""
    Path(nginx.allow_file).write_text("# notes\n\nallow 10.1.0.0/16;\n", encoding="utf-8")
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))

    provider.drop(obj, {"jit-aaaaaa"})

    assert allow_text(nginx) == "# notes\n\nallow 10.1.0.0/16;\n"


def test_drop_all_removes_every_line_in_one_reload(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """A lockdown's clearing: every jit-lb line gone at once, others' lines kept."""
    Path(nginx.allow_file).write_text("allow 10.1.0.0/16;\n", encoding="utf-8")
    provider.apply(order(spec, "jit-aaaaaa"))
    provider.apply(order(spec, "jit-bbbbbb", cidr="127.0.0.3/32"))
    ours = [obj for obj in provider.list_managed() if obj.conforms]

    assert provider.drop_all(ours) == 2

    assert allow_text(nginx) == "allow 10.1.0.0/16;\n"
    assert status_from(nginx) == 403
    assert status_from(nginx, "127.0.0.3") == 403


def test_grants_from_two_workers_at_once_both_land(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """Writes are serialised by the lock beside the file: two grants at once, two lines, both admitted."""
    other = NginxAllowlistProvider(spec)
    errors: list[Exception] = []

    def grant(which: NginxAllowlistProvider, request_id: str, cidr: str) -> None:
        try:
            which.apply(order(spec, request_id, cidr=cidr))
        except ProviderError as err:
            errors.append(err)

    threads = [
        threading.Thread(target=grant, args=(provider, "jit-aaaaaa", CIDR)),
        threading.Thread(target=grant, args=(other, "jit-bbbbbb", "127.0.0.3/32")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert {CIDR, "127.0.0.3/32"} == {obj.ref for obj in provider.list_managed()}
    assert status_from(nginx) == 200
    assert status_from(nginx, "127.0.0.3") == 200


def test_snapshot_reads_configuration_digests_and_upstreams(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """Each configuration file's digest (not the allow file's) and each upstream server; an edit shows."""
    before = provider.snapshot(order(spec, "jit-aaaaaa"))

    assert f"pid {nginx.master()}" == before["nginx master"]
    assert f"configuration file {nginx.config_file}" in before
    assert f"configuration file {nginx.extra_file}" in before
    assert f"configuration file {nginx.allow_file}" not in before
    assert before[f"upstream app: server 127.0.0.1:{nginx.backend_port}"] == "(no parameters)"

    nginx.extra_file.write_text("# tuned by someone\n", encoding="utf-8")
    provider.apply(order(spec, "jit-aaaaaa"))
    after = provider.snapshot(order(spec, "jit-aaaaaa"))

    changed = {what for what in before.keys() | after.keys() if before.get(what) != after.get(what)}
    assert {f"configuration file {nginx.extra_file}"} == changed


def test_nginx_times_read_as_nginx_reads_them() -> None:
    """`worker_shutdown_timeout` values: seconds by default, units as NGINX spells them."""
    seconds = nginx_provider._nginx_seconds
    assert [seconds(v) for v in ("10s", "500ms", "1m30s", "30", "ten")] == [10.0, 0.5, 90.0, 30.0, None]


def test_an_old_worker_that_ignores_its_shutdown_is_ended(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """Past worker_shutdown_timeout (and a margin) an old worker still there is ended, and drop returns."""
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    [worker] = nginx.workers()
    os.kill(worker, signal.SIGSTOP)  # a worker that will not act on the master's shutdown signal
    try:
        provider.drop(obj, {"jit-aaaaaa"})
        assert worker not in nginx.workers()
    finally:
        with suppress(ProcessLookupError):
            os.kill(worker, signal.SIGCONT)


def test_an_ipv6_source_gets_a_line_nginx_accepts(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """An IPv6 network is written as NGINX reads it (the configuration tests and loads), and dropped again."""
    [obj] = provider.apply(order(spec, "jit-aaaaaa", cidr="2001:db8:1::/48"))

    assert allow_text(nginx).startswith("allow 2001:db8:1::/48; # jit-lb: jit-aaaaaa until ")
    assert provider.drop(obj, {"jit-aaaaaa"}) is True
    assert allow_text(nginx) == ""


def test_a_source_that_is_not_a_network_never_reaches_the_file(
    nginx: NginxServer, spec: NginxAllowlistGrant, provider: NginxAllowlistProvider
) -> None:
    """A source with a directive smuggled in (`1.2.3.4; allow all`) is refused before anything is written."""
    with pytest.raises(ProviderError, match="not a network in CIDR form"):
        provider.apply(order(spec, "jit-aaaaaa", cidr="127.0.0.2/32; allow all"))

    assert allow_text(nginx) == ""


def test_an_allow_file_named_through_a_symlink_is_recognised(nginx: NginxServer, tmp_path: Path) -> None:
    """The grant spec may name the allow file by another path (a symlinked directory) than the configuration does."""
    link = tmp_path / "nginx-conf"
    link.symlink_to(nginx.prefix)
    spec = NginxAllowlistGrant.model_validate({**nginx.grant_spec(), "allow_file": str(link / "jit-allow.conf")})
    provider = NginxAllowlistProvider(spec)

    [obj] = provider.apply(order(spec, "jit-aaaaaa"))

    assert status_from(nginx) == 200
    assert f"configuration file {nginx.allow_file}" not in provider.snapshot(order(spec, "jit-aaaaaa"))
    assert provider.drop(obj, {"jit-aaaaaa"}) is True
    assert status_from(nginx) == 403

"""Both DAGs on the aws target survive throttling, 5xx answers and dropped connections.

A loopback proxy stands between every AWS client and the moto server. Per service (read from
the request's SigV4 credential scope) it counts requests and, deterministically, answers every
5th one with an error in the service's own protocol (alternately a throttle: 429
``ThrottlingException``, or S3's 503 ``SlowDown``; and a 5xx: 503 ``ServiceUnavailable``, or S3's
500 ``InternalError``) and drops every 11th connection without an answer: about a quarter of all
calls fail. A faulted request never reaches moto, as when AWS throttles it or the network loses
it before it lands. Among three consecutive requests to a service at most two are faulted, so
the project's retries (``FLIGHTS_AWS_MAX_ATTEMPTS``, 8 by default) always get through, while one
attempt does not. (Each retry waits botocore's backoff, about half a second at first: a higher
fault rate only makes the test slower.)

The module reuses the fixtures and seeding helpers of ``test_dags_on_aws`` (buckets, EMR
application, code artefact, Redshift Data patches) with ``moto_endpoint`` overridden to the
proxy, so ``FLIGHTS_AWS_ENDPOINT_URL`` and the ``aws_default`` connection both point at it; it
runs its own logical dates.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from datetime import date
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from include.config import settings
from include.intervals import Interval
from tests.aws.conftest import ACCOUNT, REGION
from tests.aws.test_dags_on_aws import (EMR_TASKS, LOAD_REQUESTS, WINDOW, _seed_day, _seed_training, _statements,
                                        _train, env, trained_model, uploaded)  # noqa: F401 (fixtures)
from tests.dag_runs import run as _run, states as _states, tis as _tis

pytestmark = pytest.mark.slow

FAULT_DAY, FAULT_TRAIN_DAY, NO_RETRY_DAY = date(2013, 8, 5), date(2013, 8, 6), date(2013, 8, 7)
ERROR_EVERY, DROP_EVERY = 5, 11
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length", "proxy-connection", "te",
               "upgrade"}


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of ``upstream`` that injects faults by request count.

    ``requests``, ``throttles``, ``errors`` (5xx) and ``drops`` count per service; ``snapshot()`` copies them.
    """

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.requests: Counter = Counter()
        self.throttles: Counter = Counter()
        self.errors: Counter = Counter()
        self.drops: Counter = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers 100-continue; every answer closes the connection

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self):
                body = self._body()
                self.close_connection = True
                match = _SCOPE.search(self.headers.get("Authorization") or "")
                service = match.group(1) if match else "unsigned"
                with proxy.lock:
                    proxy.requests[service] += 1
                    n = proxy.requests[service]
                    fault = "drop" if n % DROP_EVERY == 0 else None
                    if fault is None and n % ERROR_EVERY == 0:
                        fault = "throttle" if (n // ERROR_EVERY) % 2 == 1 else "error"
                    if fault:
                        {"drop": proxy.drops, "throttle": proxy.throttles, "error": proxy.errors}[fault][service] += 1
                if fault == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)  # no status line: the client sees the connection close
                    return
                if fault:
                    self._error(service, throttle=fault == "throttle")
                    return
                self._forward(body)

            def _error(self, service: str, throttle: bool):
                content_type = self.headers.get("Content-Type") or ""
                if service == "s3":
                    status, code = (503, "SlowDown") if throttle else (500, "InternalError")
                    ctype, body = "application/xml", (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}'
                                                      f'</Code><Message>injected</Message><RequestId>fault</RequestId>'
                                                      '</Error>')
                elif "x-www-form-urlencoded" in content_type:  # the query protocol (SNS)
                    status, code = (429, "Throttling") if throttle else (503, "ServiceUnavailable")
                    ctype, body = "text/xml", (f'<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code>'
                                               '<Message>injected</Message></Error><RequestId>fault</RequestId>'
                                               '</ErrorResponse>')
                else:  # the JSON and REST-JSON protocols (EMR Serverless, SageMaker, Redshift Data, SQS)
                    status, code = (429, "ThrottlingException") if throttle else (503, "ServiceUnavailableException")
                    ctype, body = "application/x-amz-json-1.1", json.dumps({"__type": code, "message": "injected"})
                data = b"" if self.command == "HEAD" else body.encode()
                self.send_response_only(status)
                for name, value in (("Content-Type", ctype), ("x-amzn-ErrorType", code), ("x-amzn-RequestId", "fault"),
                                    ("Content-Length", str(len(data))), ("Connection", "close")):
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, body: bytes):
                up = HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() not in _HOP_BY_HOP:
                            up.putheader(name, value)
                    if body or self.command in ("POST", "PUT", "PATCH"):
                        up.putheader("Content-Length", str(len(body)))
                    up.endheaders(body or None)
                    resp = up.getresponse()
                    data = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for name, value in resp.getheaders():
                        low = name.lower()
                        if low in _HOP_BY_HOP and not (low == "content-length" and self.command == "HEAD"):
                            continue
                        self.send_header(name, value)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    up.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> dict[str, Counter]:
        with self.lock:
            return {"requests": Counter(self.requests), "throttles": Counter(self.throttles),
                    "errors": Counter(self.errors), "drops": Counter(self.drops)}

    def since(self, before: dict[str, Counter]) -> dict[str, dict[str, int]]:
        """Requests, throttles, errors and drops per service since ``before``."""
        now = self.snapshot()
        return {kind: dict(now[kind] - before[kind]) for kind in now}


_PROXIES: dict[str, FaultProxy] = {}


@pytest.fixture(scope="module")
def moto_endpoint(moto_endpoint):
    """The fault proxy in front of the session's moto server: every AWS call of this module goes through it."""
    proxy = _PROXIES[moto_endpoint] = FaultProxy(moto_endpoint).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(
            {"conn_type": "aws", "extra": {"endpoint_url": proxy.url, "region_name": REGION}}))
        yield proxy.url
    proxy.stop()
    _PROXIES.clear()


@pytest.fixture(scope="module")
def proxy(moto_endpoint) -> FaultProxy:
    return next(p for p in _PROXIES.values() if p.url == moto_endpoint)


def _emr_run_names(app: str) -> Counter:
    from moto.emrserverless.models import emrserverless_backends

    return Counter(run.name for run in emrserverless_backends[ACCOUNT][REGION].job_runs.get(app, []))


def _training_jobs() -> set[str]:
    from moto.sagemaker.models import sagemaker_backends

    return set(sagemaker_backends[ACCOUNT][REGION].training_jobs)


def _new_statements(before: int) -> list:
    return _statements()[before:]


def _faulted(counts: dict[str, dict[str, int]], service: str) -> int:
    return sum(counts[kind].get(service, 0) for kind in ("throttles", "errors", "drops"))


def test_both_dags_succeed_through_throttling_5xx_and_dropped_connections(env, uploaded, trained_model, proxy):
    # --- a day -------------------------------------------------------------------------------------
    _seed_day(env["s3"], FAULT_DAY)
    LOAD_REQUESTS.clear()
    statements, before, started = len(_statements()), proxy.snapshot(), time.monotonic()
    daily = _run("flights_daily", FAULT_DAY)
    daily_s, daily_counts = time.monotonic() - started, proxy.since(before)
    assert str(daily.state) == "success", _states(daily)
    assert {t: ti.try_number for t, ti in _tis(daily).items() if ti.try_number > 1} == {}  # no task needed a retry
    for service in ("s3", "emr-serverless", "redshift-data"):
        assert _faulted(daily_counts, service) > 0, (service, daily_counts)
    key = Interval(FAULT_DAY, FAULT_DAY).key
    runs = _emr_run_names(env["app"])
    assert {n: c for n, c in runs.items() if f".{key}." in n} == {
        f"flights_daily.{t}.{key}.try1": 1 for t in EMR_TASKS}  # each job submitted once, through every fault
    assert [r["sql"][2] for r in LOAD_REQUESTS] == [
        f"DELETE FROM analytics.flight_outcomes WHERE flight_date BETWEEN '{FAULT_DAY}' AND '{FAULT_DAY}'"]
    day_statements = _new_statements(statements)
    loads = [s for s in day_statements if "DELETE FROM analytics.flight_outcomes" in s.query_string]
    assert len(loads) == 1  # the load's batch reached the Data API once
    writes = Counter((s.query_string, json.dumps(s.query_parameters, sort_keys=True, default=str))
                     for s in day_statements if not s.query_string.lstrip().upper().startswith("SELECT"))
    assert [w for w, c in writes.items() if c > 1] == []  # no row written twice

    # --- a training run ----------------------------------------------------------------------------
    job, _ = _seed_training(env, trained_model, FAULT_TRAIN_DAY)
    jobs_before, statements = _training_jobs(), len(_statements())
    before, started = proxy.snapshot(), time.monotonic()
    training = _train(FAULT_TRAIN_DAY)
    training_s, training_counts = time.monotonic() - started, proxy.since(before)
    assert str(training.state) == "success", _states(training)
    assert {t: ti.try_number for t, ti in _tis(training).items() if ti.try_number > 1} == {}
    for service in ("s3", "emr-serverless", "sagemaker", "redshift-data"):
        assert _faulted(training_counts, service) > 0, (service, training_counts)
    assert _training_jobs() - jobs_before == {job}  # one training job, under the name of try 1
    assert {n: c for n, c in _emr_run_names(env["app"]).items() if f".{WINDOW.key}." in n} == {
        f"flights_training.export_training_set.{WINDOW.key}.try1": 1}
    from include.targets import get_target

    assert get_target().registry.versions() == ["1"]  # one model version registered
    decisions = [s for s in _new_statements(statements) if s.query_string.startswith("INSERT INTO ops.model_decisions")]
    assert len(decisions) == 1, [s.query_string for s in decisions]

    total = {kind: sum(daily_counts[kind].values()) + sum(training_counts[kind].values()) for kind in daily_counts}
    assert total["throttles"] and total["errors"] and total["drops"], total  # every kind of fault was survived
    print(f"\nflights_daily: {daily_s:.1f} s, {daily_counts}\nflights_training: {training_s:.1f} s, "
          f"{training_counts}\ntotal: {total}")


def test_with_one_attempt_the_same_faults_fail_a_task(env, uploaded, proxy):
    from botocore.exceptions import ClientError, ConnectionClosedError

    from include.targets.aws.settings import load_aws_settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTS_AWS_MAX_ATTEMPTS", "1")
        mp.setenv("FLIGHTS_RETRIES", "0")  # no Airflow retry either: the first failed call fails its task
        settings.cache_clear()
        import boto3

        s3 = boto3.client("s3", **load_aws_settings().client_kwargs())
        outcomes = []
        for _ in range(DROP_EVERY):  # every 5th and 11th request to a service is faulted
            try:
                s3.list_buckets()
                outcomes.append("ok")
            except ClientError as exc:
                outcomes.append(exc.response["Error"]["Code"])
            except ConnectionClosedError:
                outcomes.append("dropped")
        assert "ok" in outcomes and set(outcomes) - {"ok"}, outcomes  # one attempt: each fault reaches the caller

        _seed_day(env["s3"], NO_RETRY_DAY)
        before = proxy.snapshot()
        dr = _run("flights_daily", NO_RETRY_DAY)
        counts = proxy.since(before)
    settings.cache_clear()
    states = _states(dr)
    assert str(dr.state) == "failed", states
    failed = sorted(t for t, s in states.items() if s == "failed")
    assert failed and sum(sum(counts[k].values()) for k in ("throttles", "errors", "drops")) > 0, (states, counts)
    print(f"\none attempt: {outcomes}; failed tasks: {failed}; {counts}")

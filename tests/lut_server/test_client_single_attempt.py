"""`LatencyClient.single_attempt`: one short try at a server that went away, then the client's own retries again."""

from __future__ import annotations

import threading

import httpx
import pytest

from lut_server.client import LatencyClient, LatencyServiceError


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_one_attempt_inside_and_the_retries_and_timeout_restored_after():
    client = LatencyClient("http://gone", "small", retries=3, backoff_s=0.0, transport=httpx.MockTransport(_refused))
    with client.single_attempt(0.5) as quick, pytest.raises(LatencyServiceError, match="after 1 attempts"):
        quick.summary()
    assert client.request_count == 1
    assert (client.retries, client.retry_horizon_s, client._http.timeout) == (3, None, httpx.Timeout(10.0))
    with pytest.raises(LatencyServiceError, match="after 4 attempts"):
        client.summary()
    assert client.request_count == 5


def test_a_probe_in_one_thread_leaves_another_threads_retries_and_timeout_alone():
    timeouts: list[tuple[str, float | None]] = []
    probing, other_done = threading.Event(), threading.Event()

    def refused(request: httpx.Request) -> httpx.Response:
        timeouts.append((threading.current_thread().name, request.extensions["timeout"]["read"]))
        raise httpx.ConnectError("connection refused", request=request)

    client = LatencyClient("http://gone", "small", retries=2, backoff_s=0.0, transport=httpx.MockTransport(refused))
    errors: dict[str, str] = {}

    def probe() -> None:
        with client.single_attempt(0.5) as quick:
            probing.set()
            other_done.wait(5)  # the other thread's whole request runs while this probe is open
            try:
                quick.summary()
            except LatencyServiceError as exc:
                errors["probe"] = str(exc)

    def query() -> None:
        probing.wait(5)
        try:
            client.summary()
        except LatencyServiceError as exc:
            errors["query"] = str(exc)
        other_done.set()

    threads = [threading.Thread(target=probe, name="probe"), threading.Thread(target=query, name="query")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert "after 3 attempts" in errors["query"] and "after 1 attempts" in errors["probe"]
    assert [t for name, t in timeouts if name == "query"] == [10.0] * 3
    assert [t for name, t in timeouts if name == "probe"] == [0.5]


@pytest.mark.parametrize("timeout_s", [0, -1.0, float("nan")])
def test_a_probe_timeout_must_be_positive(timeout_s):
    client = LatencyClient("http://gone", "small", transport=httpx.MockTransport(_refused))
    with pytest.raises(ValueError, match="timeout_s must be > 0"), client.single_attempt(timeout_s):
        pass


def test_a_probe_ignores_the_retry_horizon_and_a_nested_probe_restores_the_outer_timeout():
    timeouts: list[float] = []

    def refused(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"]["read"])
        raise httpx.ConnectError("connection refused", request=request)

    client = LatencyClient(
        "http://gone", "small", backoff_s=0.0, retry_horizon_s=60.0, transport=httpx.MockTransport(refused)
    )
    with client.single_attempt(0.5):
        with client.single_attempt(0.2), pytest.raises(LatencyServiceError, match="after 1 attempts"):
            client.summary()
        with pytest.raises(LatencyServiceError, match="after 1 attempts"):
            client.summary()
    assert timeouts == [0.2, 0.5]

"""`LatencyClient.single_attempt`: one short try at a server that went away, then the client's own retries again."""

from __future__ import annotations

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

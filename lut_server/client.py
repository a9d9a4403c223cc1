"""`LatencyClient`: the HTTP twin of `LatencyTable`, so a pruning run can take either a local table or a server.

It keeps one pooled connection, retries connection errors and 5xx answers with exponential backoff (every query
is idempotent), and raises `LatencyServiceError` naming the URL, the status and the server's message otherwise.
A run that lasts days sets `retry_horizon_s` (minutes of retrying, so a server restart does not end it) and can
`download()` the table once to answer locally when the server is gone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from lut_server import __version__
from lut_server.config import MAX_BLOCKS_PER_QUERY
from lut_server.dims import AXES, BlockDims, ModelDims
from lut_server.group_size import check_group_size, group_size_argument
from lut_server.latency_table import GroupDeltas, QueryError
from lut_server.table_format import check_table_id, read_table


class LatencyServiceError(RuntimeError):
    """A request the service did not answer successfully (after retries, where they apply)."""

    def __init__(self, message: str, url: str, status: int | None = None, detail: str | None = None, field=None):
        super().__init__(message)
        self.url = url
        self.status = status
        self.detail = detail
        self.field = field


class LatencyQueryError(LatencyServiceError, QueryError):
    """The service refused the query itself (4xx: out of range, bad dims); also a `QueryError`, like the table's."""

    def __init__(self, message: str, url: str, status: int, detail: str | None, field: str | None):
        LatencyServiceError.__init__(self, message, url, status, detail, field)
        self.field = field or ""


_RETRY_STATUSES = frozenset(range(500, 600))


class LatencyClient:
    """Queries one table of a latency service with the same methods as `LatencyTable`."""

    def __init__(
        self,
        url: str,
        table: str,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        backoff_s: float = 0.25,
        max_backoff_s: float = 2.0,
        transport: httpx.BaseTransport | None = None,
        retry_horizon_s: float | None = None,
    ):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if retry_horizon_s is not None and retry_horizon_s < 0:
            raise ValueError("retry_horizon_s must be >= 0")
        self.retry_horizon_s = retry_horizon_s
        """When set, retry for this many seconds (however many attempts that takes) instead of `retries` times."""
        self.url = url.rstrip("/")
        self.table_id = check_table_id(table)
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.request_count = 0
        """HTTP requests sent, retries included (the pruning demo reports it)."""
        headers = {"user-agent": f"vitlut-client/{__version__}"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_keepalive_connections=4, max_connections=8),
            transport=transport,
        )
        self._summary: dict[str, Any] | None = None
        self._probe = threading.local()
        """`single_attempt`'s timeout, per thread: a probe in one thread leaves another thread's retries alone."""

    # ---- plumbing -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LatencyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def single_attempt(self, timeout_s: float) -> Iterator[LatencyClient]:
        """This client with one attempt per request of at most `timeout_s` (no retries, no horizon), for asking
        whether a server that went away is back without waiting out the retries. It holds for the calling thread
        only and ends with the block."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        saved = getattr(self._probe, "timeout_s", None)
        self._probe.timeout_s = timeout_s
        try:
            yield self
        finally:
            self._probe.timeout_s = saved

    def _table_path(self, suffix: str = "") -> str:
        return f"/v1/tables/{self.table_id}{suffix}"

    def _request(self, method: str, path: str, payload: Any = None) -> httpx.Response:
        url = f"{self.url}{path}"
        content = None if payload is None else json.dumps(payload, allow_nan=False).encode()
        headers = {"content-type": "application/json"} if content is not None else None
        last_problem = ""
        probe_s = getattr(self._probe, "timeout_s", None)
        retries, horizon_s = (0, None) if probe_s is not None else (self.retries, self.retry_horizon_s)
        timeout = httpx.USE_CLIENT_DEFAULT if probe_s is None else httpx.Timeout(probe_s)
        deadline = None if horizon_s is None else time.monotonic() + horizon_s
        attempt = 0
        while True:
            if attempt:
                pause = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
                if deadline is None and attempt > retries:
                    break
                if deadline is not None and time.monotonic() + pause > deadline:
                    break
                time.sleep(pause)
            attempt += 1
            self.request_count += 1
            try:
                response = self._http.request(method, path, content=content, headers=headers, timeout=timeout)
            except httpx.TransportError as exc:
                last_problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if response.status_code in _RETRY_STATUSES:
                last_problem = f"HTTP {response.status_code}: {_detail(response)}"
                continue
            if response.status_code >= 400:
                detail = _detail(response)
                field = _field(response)
                message = f"{method} {url} -> HTTP {response.status_code}: {detail}"
                if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404):
                    raise LatencyQueryError(message, url, response.status_code, detail, field)
                raise LatencyServiceError(message, url, response.status_code, detail, field)
            return response
        raise LatencyServiceError(f"{method} {url} failed after {attempt} attempts; last problem: {last_problem}", url)

    # ---- metadata -------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The table's summary (device, workload, accuracy, ranges), fetched once and cached."""
        if self._summary is None:
            self._summary = self._request("GET", self._table_path("/summary")).json()
        return dict(self._summary)

    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        return {axis: (int(lo), int(hi)) for axis, (lo, hi) in self.summary()["ranges"].items()}

    def download(self) -> dict[str, Any]:
        """The whole table document (for a local copy that answers when the server is gone)."""
        return self._request("GET", self._table_path()).json()

    def refresh(self) -> None:
        """Forget the cached summary (after the table was replaced on the server)."""
        self._summary = None

    # ---- queries (same signatures as LatencyTable) ----------------------------------------------------------
    def block_latency(self, blocks: Sequence[BlockDims] | np.ndarray) -> np.ndarray:
        """Predicted latency in ms of each block, in order (split into requests of at most 100,000 blocks).

        The service takes whole widths, so an array must hold integers: 768.0 (an integer array cast to float) is
        sent as 768, while 64.7, NaN or inf raise QueryError naming the entry, never truncated. The local
        `LatencyTable` would interpolate a fractional width; the service cannot, so the client refuses it.
        """
        rows = _integer_rows(blocks) if isinstance(blocks, np.ndarray) else [b.as_dict() for b in blocks]
        out: list[float] = []
        for start in range(0, len(rows), MAX_BLOCKS_PER_QUERY):
            chunk = rows[start : start + MAX_BLOCKS_PER_QUERY]
            out.extend(self._request("POST", self._table_path("/latency"), {"blocks": chunk}).json()["latency_ms"])
        return np.asarray(out, dtype=float)

    def model_latency(self, model: ModelDims) -> float:
        """Blocks plus patch embedding and head (where the table has them), in one request."""
        return self.deltas(model).total_ms

    def deltas(
        self,
        model: ModelDims,
        group_size: Mapping[str, int] | None = None,
        *,
        step: Mapping[str, int] | None = None,
    ) -> GroupDeltas:
        """Exact group deltas for one pruning step, in one round trip (`step` is `group_size`'s deprecated name).

        The group sizes travel under the request's older key `step`, which every server version accepts; they are
        checked here first, so a bad one is refused as `group_size.AXIS`, as the local table does, not as the
        `step.AXIS` the server would name.
        """
        group_size = check_group_size(group_size_argument(group_size, step, "deltas"))
        payload: dict[str, Any] = model.as_dict()
        if group_size:
            payload["step"] = group_size
        answer = self._request("POST", self._table_path("/deltas"), payload).json()
        return GroupDeltas(total_ms=float(answer["total_ms"]), emb=answer["emb"], blocks=list(answer["blocks"]))

    # ---- writes ---------------------------------------------------------------------------------------------
    def upload(self, table: str | Path | Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace this table on the server from a file or a document; returns its summary."""
        data = read_table(table) if isinstance(table, str | Path) else dict(table)
        self._summary = None
        return self._request("PUT", self._table_path(), data).json()

    def delete(self) -> None:
        self._summary = None
        self._request("DELETE", self._table_path())


def _integer_rows(blocks: np.ndarray) -> list[dict[str, int]]:
    """An (N, 5) array as the request's blocks of integer widths; a width that is not a whole finite number is a
    QueryError naming it (`blocks[i].axis`), as the server names one it refuses."""
    if blocks.ndim != 2 or blocks.shape[1] != len(AXES):
        raise QueryError(f"a block array must have shape (N, {len(AXES)}) in axis order {AXES}", "blocks")
    try:
        values = np.asarray(blocks, dtype=float)
    except (TypeError, ValueError):
        raise QueryError(f"a block array must hold numbers, got dtype {blocks.dtype}", "blocks") from None
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        i, k = (int(x) for x in np.argwhere(bad)[0])
        field = f"blocks[{i}].{AXES[k]}"
        raise QueryError(f"{field} = {values[i, k]:g} is not a whole width; the service takes integers", field)
    return [dict(zip(AXES, (int(v) for v in row), strict=True)) for row in values.tolist()]


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:200]


def _field(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("field") if isinstance(body, dict) else None

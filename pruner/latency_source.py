"""The latency source a long run can rely on: pinned by content, checked against the model, with a local fallback.

A run of days must not change its latency model silently: `PinnedLatency` records the table's id and content hash
when the run starts, re-reads the served summary every `recheck_s` seconds and raises `TableChangedError` when the
hash differs (re-pin explicitly with `repin()`). When the server stops answering, it answers from a copy of the
table downloaded at the start, whose hash is the pinned one, at once from then on: the server is tried again at
most every `probe_every_s` seconds with one short request, so a pruning step never waits the client's whole retry
horizon twice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from lut_server.client import LatencyClient, LatencyQueryError, LatencyServiceError
from lut_server.dims import ModelDims
from lut_server.latency_table import GroupDeltas, LatencyTable
from lut_server.table_identity import content_hash
from profiler.vit import VitConfig


class TableChangedError(RuntimeError):
    """The served table is not the one the run pinned."""


def source_summary(source: Any) -> dict[str, Any] | None:
    """The table summary behind a latency source (a LatencyTable, a LatencyClient or a wrapper), if it has one."""
    summary = getattr(source, "summary", None)
    return dict(summary()) if callable(summary) else None


def source_identity(source: Any) -> dict[str, Any] | None:
    """{"id", "content_hash"} of the table behind a latency source (None for sources without a summary)."""
    summary = source_summary(source)
    if summary is None:
        return None
    return {"id": summary.get("id"), "content_hash": summary.get("content_hash")}


def check_workload(
    summary: Mapping[str, Any],
    config: VitConfig,
    precision: str | None = None,
    batch: int | None = None,
    depth: int | None = None,
) -> list[str]:
    """Raise ValueError when the table's tokens (or a declared deployment precision) contradict the model.

    Returns warnings: a table profiled for another deployment batch than the one declared is usable but predicts
    another deployment (the table's batch is the deployment batch, not the training batch size); a calibration
    fitted on models of other depths than the model's answers it by extrapolation.
    """
    tokens = summary.get("tokens")
    if tokens is not None and int(tokens) != config.tokens:
        raise ValueError(
            f"table {summary.get('id')!r} was profiled for {tokens} tokens; the model has {config.tokens} "
            f"({config.image_size}px images, {config.patch_size}px patches, {config.prefix_tokens} prefix tokens)"
        )
    if precision is not None and summary.get("precision") not in (None, precision):
        raise ValueError(
            f"table {summary.get('id')!r} was profiled in {summary.get('precision')}; the run deploys in {precision}"
        )
    warnings = []
    if batch is not None and summary.get("batch") not in (None, batch):
        warnings.append(
            f"table {summary.get('id')!r} predicts batch {summary.get('batch')} latency; the run declares deployment "
            f"batch {batch}"
        )
    depths = (summary.get("calibration") or {}).get("depths")
    if depth is not None and depths and depth not in depths:
        fitted = ", ".join(str(d) for d in depths)
        warnings.append(
            f"table {summary.get('id')!r} is calibrated on models of {fitted} blocks; this model has {depth}, so its "
            "calibrated latency is an extrapolation (docs/measurement.md, calibration)"
        )
    return warnings


class PinnedLatency:
    """A latency client pinned to one table content, falling back to a downloaded copy when the server is gone."""

    def __init__(
        self,
        client: LatencyClient,
        pinned_hash: str | None = None,
        recheck_s: float = 60.0,
        local_fallback: bool = True,
        probe_every_s: float = 300.0,
        probe_timeout_s: float = 5.0,
    ):
        self.client = client
        self.recheck_s = recheck_s
        self.probe_every_s = probe_every_s
        self.probe_timeout_s = probe_timeout_s
        self.offline_since: float | None = None
        """monotonic() when the server stopped answering and the local copy took over; None while online."""
        self._probed_at = 0.0
        summary = client.summary()
        served = summary.get("content_hash")
        if served is None:
            raise TableChangedError(f"server at {client.url} does not report a content hash; cannot pin the table")
        if pinned_hash is not None and served != pinned_hash:
            raise TableChangedError(
                f"table {client.table_id!r} on {client.url} has content {served[:12]}, the run pinned "
                f"{pinned_hash[:12]}; pass the new table explicitly to re-pin"
            )
        self.pinned_hash = served
        self._summary = summary
        self._checked_at = time.monotonic()
        self.fallback: LatencyTable | None = None
        self.fallback_queries = 0
        if local_fallback:
            doc = client.download()
            if content_hash(doc) != served:
                raise TableChangedError(f"table {client.table_id!r} changed while it was being downloaded")
            self.fallback = LatencyTable(doc, client.table_id)

    # ---- identity -------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return dict(self._summary)

    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        return {axis: (int(lo), int(hi)) for axis, (lo, hi) in self._summary["ranges"].items()}

    def repin(self) -> str:
        """Accept the table the server holds now; returns its hash."""
        self.client.refresh()
        self._summary = self.client.summary()
        self.pinned_hash = self._summary["content_hash"]
        self.fallback = None
        self.offline_since = None
        self._checked_at = time.monotonic()
        return self.pinned_hash

    def _check_pin(self) -> None:
        if time.monotonic() - self._checked_at < self.recheck_s:
            return
        self.client.refresh()
        served = self.client.summary().get("content_hash")
        self._checked_at = time.monotonic()
        if served != self.pinned_hash:
            raise TableChangedError(
                f"table {self.client.table_id!r} on {self.client.url} changed mid-run (content {str(served)[:12]}, "
                f"pinned {self.pinned_hash[:12]}); re-pin explicitly to continue with it"
            )

    # ---- queries --------------------------------------------------------------------------------------------
    def _ask(self, name: str, *args: Any) -> Any:
        if self.offline_since is not None:
            if time.monotonic() - self._probed_at < self.probe_every_s:
                return self._from_copy(name, *args)
            self._probed_at = time.monotonic()
            self._checked_at = float("-inf")  # the table may have been replaced while the server was away
            try:
                with self.client.single_attempt(self.probe_timeout_s):
                    self._check_pin()
                    answer = getattr(self.client, name)(*args)
            except LatencyQueryError:
                raise
            except LatencyServiceError as exc:
                if exc.status is not None:
                    raise
                return self._from_copy(name, *args)
            away = time.monotonic() - self.offline_since
            self.offline_since = None
            print(f"latency server answers again after {away:.0f} s; querying it again", file=sys.stderr)
            return answer
        try:
            self._check_pin()
            return getattr(self.client, name)(*args)
        except LatencyQueryError:
            raise
        except LatencyServiceError as exc:
            if self.fallback is None or exc.status is not None:
                raise
            self.offline_since = self._probed_at = time.monotonic()
            print(
                f"latency server unreachable ({exc}); answering from the pinned local copy, retrying the server "
                f"every {self.probe_every_s:g} s",
                file=sys.stderr,
            )
            return self._from_copy(name, *args)

    def _from_copy(self, name: str, *args: Any) -> Any:
        assert self.fallback is not None
        self.fallback_queries += 1
        return getattr(self.fallback, name)(*args)

    def deltas(self, model: ModelDims, group_size: Mapping[str, int] | None = None) -> GroupDeltas:
        return self._ask("deltas", model, group_size)

    def model_latency(self, model: ModelDims) -> float:
        return self._ask("model_latency", model)

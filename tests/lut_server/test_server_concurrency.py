"""50 concurrent readers while the same table is replaced 20 times: every answer is wholly the old or the new table."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable
from tests.lut_server.server_process import ServerProcess
from tests.table_factory import make_table

TOKEN = "concurrency-token"
READERS = 50
REPLACEMENTS = 20
BLOCKS = [BlockDims(128, 1 + i % 4, 8 + i, 8 + 2 * i, 64 + 30 * i) for i in range(12)]


@pytest.mark.slow
def test_readers_see_old_or_new_table_never_a_mix_or_an_error(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    versions = [make_table(scale=1.0), make_table(scale=2.0)]
    (tables / "live.json").write_text(json.dumps(versions[0]))
    expected_latency = [LatencyTable(v).block_latency(BLOCKS) for v in versions]
    model = ModelDims.from_blocks(BLOCKS)
    expected_total = [LatencyTable(v).deltas(model).total_ms for v in versions]
    latency_body = {"blocks": [b.as_dict() for b in BLOCKS]}

    with ServerProcess(tables, env={"LUT_SERVER_TOKEN": TOKEN}, workers=2) as server:
        done = threading.Event()
        start = threading.Barrier(READERS + 1)
        problems: list[str] = []
        seen = [[0, 0] for _ in range(READERS)]

        def reader(index: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                start.wait()
                round_ = 0
                while not done.is_set() or round_ < 3:
                    round_ += 1
                    try:
                        if round_ % 2:
                            answer = http.post("/v1/tables/live/latency", json=latency_body)
                            values = np.array(answer.json()["latency_ms"])
                            matches = [np.allclose(values, e, rtol=1e-12, atol=0) for e in expected_latency]
                        else:
                            answer = http.post("/v1/tables/live/deltas", json=model.as_dict())
                            total = answer.json()["total_ms"]
                            matches = [abs(total - e) <= 1e-12 * e for e in expected_total]
                    except Exception as exc:  # any transport error or bad body is a failure of the test
                        problems.append(f"reader {index}: {type(exc).__name__}: {exc}")
                        return
                    if answer.status_code != 200 or not any(matches):
                        problems.append(f"reader {index}: HTTP {answer.status_code}, matches {matches}")
                        return
                    seen[index][matches.index(True)] += 1

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
        for thread in threads:
            thread.start()
        start.wait()
        with httpx.Client(base_url=server.url, timeout=30, headers={"authorization": f"Bearer {TOKEN}"}) as writer:
            for i in range(REPLACEMENTS):
                answer = writer.put("/v1/tables/live", json=versions[(i + 1) % 2])
                assert answer.status_code == 200, answer.text
        done.set()
        for thread in threads:
            thread.join(timeout=120)

    assert not problems, problems[:5]
    assert all(sum(s) >= 3 for s in seen)
    totals = np.array(seen).sum(axis=0)
    assert totals[0] > 0 and totals[1] > 0, totals  # both versions were really served during the run
    # the last replacement (index 19) wrote version 0 back
    assert LatencyTable.load(tables / "live.json").block_latency(BLOCKS) == pytest.approx(expected_latency[0])

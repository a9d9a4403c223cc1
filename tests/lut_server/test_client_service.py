"""LatencyClient against a live server: same answers as the local table, retries across a restart, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lut_server.client import LatencyClient, LatencyQueryError, LatencyServiceError
from lut_server.dims import BlockDims, ModelDims
from lut_server.latency_table import LatencyTable, QueryError
from tests.lut_server.server_process import ServerProcess, free_port
from tests.table_factory import SMALL_GRID, make_table

TOKEN = "client-test-token"
BLOCKS = [BlockDims(64 + 8 * i, 1 + i % 4, 8 + 2 * i, 32 - 2 * i, 64 + 37 * i) for i in range(12)]


@pytest.mark.slow
def test_client_answers_like_the_local_table(tables_dir: Path) -> None:
    local = LatencyTable(make_table(), "small")
    model = ModelDims.from_blocks([BlockDims(128, b.heads, b.qk, b.v, b.mlp) for b in BLOCKS])
    with (
        ServerProcess(tables_dir, env={"LUT_SERVER_TOKEN": TOKEN}) as server,
        LatencyClient(server.url, "small") as client,
    ):
        np.testing.assert_allclose(client.block_latency(BLOCKS), local.block_latency(BLOCKS), rtol=1e-12)
        rows = np.array([[b.emb, b.heads, b.qk, b.v, b.mlp] for b in BLOCKS])
        np.testing.assert_allclose(client.block_latency(rows), local.block_latency(rows), rtol=1e-12)
        assert client.model_latency(model) == pytest.approx(local.model_latency(model), rel=1e-12)
        remote, here = client.deltas(model, {"mlp": 32}), local.deltas(model, {"mlp": 32})
        assert remote.total_ms == pytest.approx(here.total_ms, rel=1e-12)
        assert remote.emb == pytest.approx(here.emb, rel=1e-12)
        for got, want in zip(remote.blocks, here.blocks, strict=True):
            assert got.keys() == want.keys()
            assert [got[a] is None for a in got] == [want[a] is None for a in got]
            assert [got[a] for a in got if got[a] is not None] == pytest.approx(
                [want[a] for a in got if want[a] is not None], rel=1e-12
            )
        assert client.ranges == local.ranges == {a: (min(v), max(v)) for a, v in SMALL_GRID.items()}
        assert client.summary()["device"] == "test-cpu"
        count = client.request_count
        assert count == 5  # one request per query, plus one summary fetch (cached afterwards)

        with pytest.raises(LatencyQueryError) as error:
            client.block_latency([BlockDims(4096, 1, 8, 8, 64)])
        assert isinstance(error.value, QueryError)
        assert error.value.status == 422 and error.value.field == "blocks[0].emb"
        assert "[64, 256]" in str(error.value) and server.url in str(error.value)
        assert client.request_count == count + 1  # a 4xx is not retried

        with pytest.raises(LatencyServiceError, match="HTTP 404"):
            LatencyClient(server.url, "missing").block_latency(BLOCKS)
        with pytest.raises(LatencyServiceError, match="HTTP 401"):
            LatencyClient(server.url, "other", token="wrong-token").upload(make_table())

        writer = LatencyClient(server.url, "other", token=TOKEN)
        assert writer.upload(make_table(scale=2.0))["id"] == "other"
        np.testing.assert_allclose(writer.block_latency(BLOCKS), 2 * local.block_latency(BLOCKS), rtol=1e-12)
        writer.delete()
        assert not (tables_dir / "other.json").exists()


@pytest.mark.slow
def test_client_survives_a_server_restart_and_fails_clearly_when_it_stays_down(tables_dir: Path) -> None:
    expected = LatencyTable(make_table()).block_latency(BLOCKS)
    server = ServerProcess(tables_dir, port=free_port()).start()
    client = LatencyClient(server.url, "small", retries=10, backoff_s=0.1, max_backoff_s=1.0)
    try:
        np.testing.assert_allclose(client.block_latency(BLOCKS), expected)
        server.kill()  # a crash mid-run: the pooled connection dies with it
        restart = threading.Thread(target=lambda: (time.sleep(0.5), server.start()))
        restart.start()
        before = client.request_count
        np.testing.assert_allclose(client.block_latency(BLOCKS), expected)  # retried until the server was back
        restart.join()
        assert client.request_count > before + 1
    finally:
        server.kill()
    down = LatencyClient(server.url, "small", retries=2, backoff_s=0.05)
    started = time.monotonic()
    with pytest.raises(LatencyServiceError) as error:
        down.block_latency(BLOCKS)
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert server.url in message and "3 attempts" in message and "ConnectError" in message
    assert down.request_count == 3


@pytest.mark.slow
def test_profiler_upload_command(tables_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "made-here.json"
    source.write_text(json.dumps(make_table(scale=3.0)))
    command = [sys.executable, "-m", "profiler", "upload", str(source)]
    with ServerProcess(tables_dir, env={"LUT_SERVER_TOKEN": TOKEN}) as server:
        env = {k: v for k, v in os.environ.items() if k != "LUT_SERVER_TOKEN"}
        no_token = subprocess.run([*command, "--server", server.url], env=env, capture_output=True, text=True)
        assert no_token.returncode == 2 and "LUT_SERVER_TOKEN" in no_token.stderr
        env["LUT_SERVER_TOKEN"] = "not-the-token"
        wrong = subprocess.run([*command, "--server", server.url], env=env, capture_output=True, text=True)
        assert wrong.returncode == 1 and "401" in wrong.stderr
        env["LUT_SERVER_TOKEN"] = TOKEN
        ok = subprocess.run([*command, "--server", server.url, "--id", "uploaded"], env=env, capture_output=True)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["uploaded"] == "uploaded"
        assert LatencyTable.load(tables_dir / "uploaded.json").data == LatencyTable(make_table(scale=3.0)).data

"""The page at GET / in real headless Chromium: the screenshot must show every latency curve, in its own plot."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lut_server.app import create_app
from lut_server.config import ServerConfig
from lut_server.status_page import AXIS_COLOURS
from tests.lut_server.server_process import ServerProcess

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


@pytest.mark.slow
def test_page_shows_latency_curves_in_headless_chromium(tables_dir: Path, tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not found (run scripts/install-browser.sh, or set CHROMIUM=/path/to/chromium)")
    image_module = pytest.importorskip("PIL.Image")
    shot = tmp_path / "page.png"
    with ServerProcess(tables_dir) as server:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1700,1000",
            f"--screenshot={shot}",
            f"{server.url}/",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(image_module.open(shot).convert("RGB"))
    height, width, _ = pixels.shape
    boxes = {}
    for axis, colour in AXIS_COLOURS.items():
        ys, xs = np.nonzero(np.all(pixels == _rgb(colour), axis=-1))
        assert xs.size > 200, f"the {axis} curve is not visible ({xs.size} pixels of {colour})"
        boxes[axis] = (xs.min(), xs.max(), ys.min(), ys.max())
        # a curve across its plot (a line of ~240 px), not a dot or a legend swatch
        assert xs.max() - xs.min() > 150, (axis, boxes[axis])
    # five separate plots: no two curves' bounding boxes overlap, and all lie below the metadata
    for a, b in itertools.combinations(boxes.values(), 2):
        assert a[1] < b[0] or b[1] < a[0] or a[3] < b[2] or b[3] < a[2], boxes
    assert all(b[2] > 150 for b in boxes.values())
    # the curves rise: in each plot the right end (widest) is higher on screen than the left end
    for axis, colour in AXIS_COLOURS.items():
        ys, xs = np.nonzero(np.all(pixels == _rgb(colour), axis=-1))
        left_y = ys[xs <= xs.min() + 5].mean()
        right_y = ys[xs >= xs.max() - 5].mean()
        assert right_y < left_y, (axis, left_y, right_y)
    assert width >= 1700 and height >= 1000


def test_held_values_change_the_curves_and_are_clamped(tables_dir: Path) -> None:
    client = TestClient(create_app(ServerConfig(tables_dir)))
    default = client.get("/").text
    assert "test-cpu" in default and "torch-cpu" in default and "median APE 1.5%" in default
    assert default.count("<svg") == 5 and default.count("<polyline") == 5
    narrow = client.get("/", params={"table": "small", "mlp": "64", "heads": "1"}).text
    assert 'name="mlp" value="64"' in narrow and 'name="heads" value="1"' in narrow
    emb_curve = [page.split('data-axis="emb"')[1].split("<polyline points=")[1][:200] for page in (default, narrow)]
    assert emb_curve[0] != emb_curve[1]
    clamped = client.get("/", params={"table": "small", "qk": "4096", "v": "x<script>"}).text
    assert "qk = 4096 is outside [8, 32]; using 32" in clamped
    assert "<script>" not in clamped and "&#x27;x&lt;script&gt;&#x27;" in clamped

"""`python -m lut_server` refuses settings it cannot serve with one `error:` line and exit 2, before binding, and
says truthfully how tables can arrive in an empty directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvicorn

from lut_server.__main__ import main
from lut_server.app import create_app
from lut_server.config import ServerConfig


def test_a_table_file_instead_of_a_directory_is_refused(tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_text("{}")
    assert main(["--tables", str(table)]) == 2
    assert "is a file; it takes the directory of ID.json tables" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["-1", "65536", "99999"])
def test_a_port_outside_the_tcp_range_is_refused(tmp_path, capsys, port):
    assert main(["--tables", str(tmp_path), "--port", port]) == 2
    assert f"--port must be 0 to 65535, got {port}" in capsys.readouterr().err


def test_a_non_integer_port_in_the_environment_names_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LUT_SERVER_PORT", "abc")
    with pytest.raises(SystemExit) as stopped:
        main(["--tables", str(tmp_path)])
    assert stopped.value.code == 2
    assert "LUT_SERVER_PORT must be an integer, got 'abc'" in capsys.readouterr().err


def test_a_flag_wins_over_a_malformed_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LUT_SERVER_PORT", "abc")
    assert main(["--tables", str(tmp_path), "--port", "70000"]) == 2  # refused for the flag's value: abc never read
    err = capsys.readouterr().err
    assert "--port must be 0 to 65535, got 70000" in err and "LUT_SERVER_PORT" not in err


def test_a_missing_directory_is_refused_not_created(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started serving a directory that is missing"))
    missing = tmp_path / "tabels"
    assert main(["--tables", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--tables {missing} does not exist" in err and f"mkdir -p {missing}" in err
    assert not missing.exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_app(ServerConfig(missing))  # the app factory, as uvicorn workers call it, creates nothing either
    assert not missing.exists()


def _start_without_serving(tables: Path, token: str | None) -> subprocess.CompletedProcess:
    """`python -m lut_server` up to the point it would bind, in its own process (it configures logging)."""
    code = (
        "import sys, uvicorn; uvicorn.run = lambda *a, **k: None; from lut_server.__main__ import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUT_SERVER_")}
    env |= {"LUT_SERVER_TOKEN": token} if token else {}
    command = [sys.executable, "-c", code, "--tables", str(tables)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    ("token", "says", "never"),
    [
        (None, "copy ID.json files in (uploads are refused: LUT_SERVER_TOKEN is not set)", "PUT"),
        ("write-token-123", "uploads (PUT /v1/tables/ID) or ID.json files copied in add them", "refused"),
    ],
)
def test_an_empty_directory_starts_and_the_warning_says_how_tables_can_arrive(tmp_path, token, says, never):
    started = _start_without_serving(tmp_path, token)
    assert started.returncode == 0, started.stderr
    (empty,) = [json.loads(line) for line in started.stderr.splitlines() if "no tables in" in line]
    assert empty["level"] == "warning" and empty["msg"] == f"no tables in {tmp_path}: {says}"
    assert never not in empty["msg"]


def test_an_unknown_log_level_is_refused_from_the_flag_and_from_the_environment(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as stopped:
        main(["--tables", str(tmp_path), "--log-level", "bogus"])
    assert stopped.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
    monkeypatch.setenv("LUT_SERVER_LOG_LEVEL", "bogus")
    assert main(["--tables", str(tmp_path)]) == 2
    assert "LUT_SERVER_LOG_LEVEL must be one of critical, error, warning, info, debug" in capsys.readouterr().err


def test_a_body_limit_below_the_floor_names_the_flag(tmp_path, capsys):
    assert main(["--tables", str(tmp_path), "--max-body-bytes", "5"]) == 2
    assert "--max-body-bytes (or LUT_SERVER_MAX_BODY_BYTES) must be at least 1024, got 5" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "name"), [("LUT_SERVER_TOKEN", "write_token"), ("LUT_SERVER_READ_TOKEN", "read_token")]
)
def test_a_short_token_names_the_variable_it_came_from(tmp_path, capsys, monkeypatch, variable, name):
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("started serving with a token it refuses"))
    for other in ("LUT_SERVER_TOKEN", "LUT_SERVER_READ_TOKEN"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(variable, "short")
    assert main(["--tables", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {variable} ({name}) must be at least 8 characters (or unset)\n"

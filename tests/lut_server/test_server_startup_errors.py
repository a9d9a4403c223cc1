"""`python -m lut_server` refuses settings it cannot serve with one `error:` line and exit 2, before binding."""

from __future__ import annotations

import pytest

from lut_server.__main__ import main


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

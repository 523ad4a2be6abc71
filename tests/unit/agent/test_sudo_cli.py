"""The sandbox's `sudo` reads options the way scripts write them (agent/sudo_cli.py)."""
from __future__ import annotations

import pytest

from sandboxd.agent import sudo_cli


def test_plain_command_runs_as_root():
    r = sudo_cli.parse(["apt-get", "install", "-y", "curl"])
    assert r["user"] == "root" and r["argv"] == ["apt-get", "install", "-y", "curl"]


@pytest.mark.parametrize("args", [["-u", "user", "id"], ["-uuser", "id"], ["--user=user", "id"],
                                  ["-Eu", "user", "id"], ["-u", "#1000", "id"]])
def test_user_option_spellings(args):
    r = sudo_cli.parse(args)
    assert r["user"] in ("user", "1000") and r["argv"] == ["id"]


def test_options_stop_at_the_command_or_double_dash():
    assert sudo_cli.parse(["-n", "--", "-weird"])["argv"] == ["-weird"]
    assert sudo_cli.parse(["ls", "-u"])["argv"] == ["ls", "-u"]
    assert sudo_cli.parse(["-E", "env"])["preserve_env"] is True


def test_shell_and_login_wrap_the_command():
    assert sudo_cli.parse(["-s"])["argv"][0] in ("/bin/bash", "/bin/sh")
    login = sudo_cli.parse(["-i", "echo", "hi"])["argv"]
    assert login[1:] == ["-l", "-c", "echo hi"]


@pytest.mark.parametrize("args", [[], ["-Z", "x"], ["--bogus", "x"], ["-u"]])
def test_bad_use_exits_with_usage(args):
    with pytest.raises(SystemExit) as e:
        sudo_cli.parse(args)
    assert "usage" in str(e.value) or "option" in str(e.value)

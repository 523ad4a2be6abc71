"""`sudo` in a sandbox, as E2B's templates give their user: through the agent, since no_new_privs disarms a
setuid binary (agent/sudo.py)."""
from __future__ import annotations

import pytest


@pytest.fixture
def real_sandbox(sandbox, e2b_env):
    if e2b_env["backend"] == "fake":
        pytest.skip("the fake backend runs commands on the host, where sudo is the host's")
    return sandbox


def test_sudo_runs_as_root_for_the_default_user(real_sandbox):
    me = real_sandbox.commands.run("id -un")
    assert me.stdout.strip() == "user"
    out = real_sandbox.commands.run("sudo id -un; sudo -n true && echo ok")
    assert out.stdout.split() == ["root", "ok"]
    made = real_sandbox.commands.run("sudo touch /etc/made-by-sudo && stat -c %U /etc/made-by-sudo")
    assert made.stdout.strip() == "root"


def test_exit_status_stdin_and_user_option(real_sandbox):
    from e2b import CommandExitException

    with pytest.raises(CommandExitException) as failed:
        real_sandbox.commands.run("sudo sh -c 'exit 7'")
    assert failed.value.exit_code == 7
    piped = real_sandbox.commands.run("printf 'a\\nb\\n' | sudo wc -l")
    assert piped.stdout.strip() == "2"
    other = real_sandbox.commands.run("sudo -u user id -un", user="root")
    assert other.stdout.strip() == "user"
    login = real_sandbox.commands.run("sudo -i pwd")
    assert login.stdout.strip() == "/root"


def test_environment_is_reset_unless_preserved(real_sandbox):
    scoped = real_sandbox.commands.run("echo $FOO", envs={"FOO": "bar"})
    assert scoped.stdout.strip() == "bar"
    later = real_sandbox.commands.run('sudo echo "$FOO"')
    assert later.exit_code == 0 and later.stdout.strip() == ""
    reset = real_sandbox.commands.run("FOO=bar sudo sh -c 'echo ${FOO:-unset} $SUDO_USER $HOME'")
    assert reset.stdout.split() == ["unset", "user", "/root"]
    kept = real_sandbox.commands.run("FOO=bar sudo -E sh -c 'echo $FOO'")
    assert kept.stdout.strip() == "bar"


def test_unknown_user_and_bad_options_fail_clearly(real_sandbox):
    from e2b import CommandExitException

    with pytest.raises(CommandExitException) as unknown:
        real_sandbox.commands.run("sudo -u nosuchuser true")
    assert "unknown user" in unknown.value.stderr
    with pytest.raises(CommandExitException) as bad:
        real_sandbox.commands.run("sudo -Z true")
    assert "invalid option" in bad.value.stderr


def test_a_killed_sudo_takes_its_command_with_it(real_sandbox):
    import time

    handle = real_sandbox.commands.run("sudo sleep 300", background=True)
    deadline = time.monotonic() + 10
    while real_sandbox.commands.run("pgrep -x sleep || true").stdout.strip() == "":
        assert time.monotonic() < deadline, "sudo's command never started"
        time.sleep(0.1)
    assert real_sandbox.commands.kill(handle.pid)
    deadline = time.monotonic() + 10
    while real_sandbox.commands.run("pgrep -x sleep || true").stdout.strip() != "":
        assert time.monotonic() < deadline, "the command outlived its sudo"
        time.sleep(0.1)

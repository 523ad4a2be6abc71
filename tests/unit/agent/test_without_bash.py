"""E2B's and HopX's clients run commands as `bash [-l] -c ...`: in an image without bash, the image's sh."""
import os

from sandboxd.agent.processes import without_bash


def test_a_missing_bash_becomes_sh(tmp_path):
    env = {"PATH": str(tmp_path)}  # no bash on this PATH
    assert without_bash(["bash", "-c", "echo hi"], env) == ["/bin/sh", "-c", "echo hi"]
    assert without_bash([str(tmp_path / "bash"), "-l", "-c", "id -u"], env) == ["/bin/sh", "-l", "-c", "id -u"]


def test_a_bash_that_is_there_and_other_programs_stay(tmp_path):
    bash = tmp_path / "bash"
    bash.write_text("#!/bin/sh\n")
    bash.chmod(0o755)
    env = {"PATH": str(tmp_path)}
    assert without_bash(["bash", "-c", "x"], env) == ["bash", "-c", "x"]
    assert without_bash([str(bash), "-c", "x"], env) == [str(bash), "-c", "x"]
    assert without_bash(["zsh", "-c", "x"], {"PATH": os.defpath}) == ["zsh", "-c", "x"]

"""Steps: a RUN may name its user (kept out of the exec-form join), an ENV may set several pairs."""
from __future__ import annotations

import pytest

from sandboxd.errors import Invalid
from sandboxd.templates.steps import parse_step


def test_run_as_a_user_and_its_cache_key():
    step = parse_step({"type": "RUN", "args": ["whoami"], "user": "root"}, 0)
    assert step.args == ("whoami",) and step.user == "root" and step.key()["user"] == "root"
    plain = parse_step({"type": "RUN", "args": ["whoami"]}, 0)
    assert plain.user is None and "user" not in plain.key()  # layers cached before users existed keep their keys
    assert parse_step({"type": "RUN", "args": ["echo", "a b"]}, 0).args == ("echo 'a b'",)  # exec form


@pytest.mark.parametrize("user", ["", "a:b", "x\x00", 5])
def test_bad_run_users(user):
    with pytest.raises(Invalid):
        parse_step({"type": "RUN", "args": ["true"], "user": user}, 0)


def test_env_pairs():
    assert parse_step({"type": "ENV", "args": ["A", "1", "B", ""]}, 0).args == ("A", "1", "B", "")
    for args in (["A", "1", "B"], ["A", "1", "", "2"], ["A", "1", "B-C", "2"]):
        with pytest.raises(Invalid):
            parse_step({"type": "ENV", "args": args}, 0)

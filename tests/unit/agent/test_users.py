"""One user lookup for the agent (agent/users.py), worded per dialect: HopX and envd refuse unknown users
each in its own words."""
from __future__ import annotations

import os
import pwd

import pytest

from sandboxd.agent import users
from sandboxd.agent.envd import users as envd_users
from sandboxd.agent.errors import InvalidRequest
from sandboxd.agent.processes import ids_of, run_as
from sandboxd.errors import Unauthorized

ME = pwd.getpwuid(os.geteuid())
NOBODY = "sandboxd-no-such-user"


def test_lookup_by_name_uid_and_digits():
    by_name = users.lookup(ME.pw_name)
    assert by_name == users.User(ME.pw_name, ME.pw_uid, ME.pw_gid, ME.pw_dir)
    assert users.lookup(ME.pw_uid) == by_name == users.lookup(str(ME.pw_uid))
    assert by_name is not None and by_name.is_self and by_name.owner is None


def test_unknown_users_are_none():
    assert users.lookup(NOBODY) is None
    assert users.lookup(2**31 - 2) is None


def test_another_user_owns_what_is_made_for_it():
    other = next((p for p in pwd.getpwall() if p.pw_uid != os.geteuid()), None)
    if other is None:
        pytest.skip("this host has one user")
    user = users.lookup(other.pw_name)
    assert user is not None and not user.is_self and user.owner == (other.pw_uid, other.pw_gid)


def test_myself_takes_home_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    me = users.myself()
    assert (me.name, me.uid, me.home) == (ME.pw_name, ME.pw_uid, str(tmp_path))


def test_names_of_ids_without_an_entry_are_the_ids():
    assert users.name_of(ME.pw_uid) == ME.pw_name
    assert users.name_of(2**31 - 3) == str(2**31 - 3)
    assert users.group_name(2**31 - 3) == str(2**31 - 3)


def test_hopx_refuses_an_unknown_user_as_an_invalid_request():
    with pytest.raises(InvalidRequest, match=f"unknown user: {NOBODY}"):
        run_as(NOBODY)
    assert run_as(None) is None and run_as("") is None and run_as(ME.pw_name) is None
    assert ids_of(None) == {}


def test_hopx_runs_another_user_with_its_ids():
    other = next((p for p in pwd.getpwall() if p.pw_uid != os.geteuid()), None)
    if other is None or os.geteuid() != 0 or other.pw_uid == 0:
        pytest.skip("needs root and another user")
    user = run_as(other.pw_name)
    assert user is not None and ids_of(user) == {"user": other.pw_uid, "group": other.pw_gid, "extra_groups": []}


def test_envd_refuses_an_unknown_user_as_unauthenticated():
    with pytest.raises(Unauthorized, match=f"invalid username: '{NOBODY}'"):
        envd_users.resolve(NOBODY)
    assert envd_users.resolve(ME.pw_name).uid == ME.pw_uid


def test_root_is_known_without_a_passwd_entry(monkeypatch):
    """Images without /etc/passwd (busybox-only, scratch) still have root."""
    def missing(_):
        raise KeyError("no passwd")
    monkeypatch.setattr(pwd, "getpwnam", missing)
    monkeypatch.setattr(pwd, "getpwuid", missing)
    assert users.lookup("root") == users.lookup(0) == users.lookup("0") == users.User("root", 0, 0, "/root")
    assert users.lookup("user") is None and users.lookup(1000) is None

"""The SDK's teams methods, keys placed in a team, a create with its own resources, and QuotaExceededError."""
from __future__ import annotations

import secrets

import pytest


def test_teams_quotas_and_resources_through_the_sdk(sdk_env):
    from sandboxd.sdk import Client, PermissionDeniedError, QuotaExceededError, Sandbox

    name = "sdk-" + secrets.token_hex(4)
    with Client() as op:
        team = op.create_team(name)
        assert name in [t.name for t in op.list_teams()]
        key = op.create_key("m", team=name, role="member")
        assert key.team_id == team.id and key.role == "member" and key.key
        set_ = op.set_quotas(name, max_sandboxes=1, max_vcpu=8)
        assert set_.quotas["max_sandboxes"] == 1 and set_.quotas["max_vcpu"] == 8 and set_.usage_now["sandboxes"] == 0
        sb = Sandbox.create("base", api_key=key.key, api_url=sdk_env.url, memory_mb=288, vcpu=1)
        try:
            assert sb.get_info().resources["memory_mb"] == 288
            with pytest.raises(QuotaExceededError) as refused:
                Sandbox.create("base", api_key=key.key, api_url=sdk_env.url)
            assert isinstance(refused.value, PermissionDeniedError) and refused.value.status_code == 403
            assert (refused.value.quota, refused.value.limit, refused.value.current) == ("max_sandboxes", 1, 1)
            with Client(key.key, sdk_env.url) as member:
                own = member.get_team()
                assert own.id == team.id and own.usage_now["memory_mb"] == 288
                with pytest.raises(PermissionDeniedError):
                    member.set_quotas(name, max_sandboxes=5)
            assert op.set_quotas(name, max_sandboxes=None).quotas == {**set_.quotas, "max_sandboxes": None}
            assert op.get_team(team.id).usage_now["sandboxes"] == 1
        finally:
            sb.kill()
        op.revoke_key(key.id)
        assert op.delete_team(name).id == team.id

from datetime import datetime, timezone

from sandboxd.core.store.tables import SandboxRow
from sandboxd.monitor.prometheus import PlatformMetrics
from sandboxd.monitor.series import Sample


def _row(sid, status):
    now = datetime.now(timezone.utc)
    return SandboxRow(id=sid, status=status, template_id="t", template_name="base", region="local", node_id="n", vcpu=1.0,
                      memory_mb=512, disk_mb=1024, internet_access=False, env_vars={}, metadata_={}, timeout_seconds=60,
                      created_at=now, token_version=1)


def test_states_counters_and_the_per_sandbox_switch(store):
    with store.tx() as s:
        failed = _row("e", "killed")
        failed.kill_reason = "error"  # what the lifecycle leaves behind when a create fails
        s.add_all([_row("a", "running"), _row("b", "running"), _row("c", "paused"), _row("d", "killed"), failed])
    latest = {"a": Sample("a", 1.0, 1.0, 42.5, 100, 1000, 0, 7, 70)}
    off = PlatformMetrics(store, latest=lambda: latest, lag=lambda: (0.25, 0.01), per_sandbox=False)
    off.observe_created(0.3)
    off.observe_delivery("retry", 0.1)
    text = off.render().decode()
    assert 'sandboxd_sandboxes{state="running"} 2.0' in text and 'sandboxd_sandboxes{state="paused"} 1.0' in text
    assert 'sandboxd_sandboxes{state="creating"} 0.0' in text
    assert "sandboxd_sandbox_creates_total 1.0" in text and "sandboxd_sandbox_create_failures_total 1.0" in text
    assert 'sandboxd_sandbox_create_seconds_bucket{le="0.5"} 1.0' in text
    assert 'sandboxd_webhook_deliveries_total{outcome="retry"} 1.0' in text
    assert "sandboxd_sampler_lag_seconds 0.25" in text
    assert "sandbox_id" not in text
    on = PlatformMetrics(store, latest=lambda: latest, lag=lambda: (0.0, 0.0), per_sandbox=True)
    text = on.render().decode()
    assert 'sandboxd_sandbox_cpu_percent{sandbox_id="a"} 42.5' in text
    assert 'sandboxd_sandbox_memory_bytes{sandbox_id="a"} 100.0' in text

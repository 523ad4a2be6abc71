from sandboxd.monitor.sampler import cpu_percent
from sandboxd.monitor.series import DOWNSAMPLE_STEP, Sample, SeriesStore

E2B_KEYS = {"timestamp", "timestampUnix", "cpuCount", "cpuUsedPct", "memUsed", "memTotal", "memCache", "diskUsed", "diskTotal"}


def _s(sid, ts, cpu=10.0, mem=100):
    return Sample(sid, ts, 2.0, cpu, mem, 1000, 5, 7, 70, 1, 2)


def test_range_latest_and_e2b_shape(store):
    series = SeriesStore(store, retention_seconds=7 * 86400)
    series.write([_s("a", 1000.0), _s("b", 1000.0), _s("a", 1001.0, mem=200)])
    got = series.range("a")
    assert [x.mem_used for x in got] == [100, 200]
    assert [x.ts for x in series.range("a", 1000.5, 2000)] == [1001.0]
    latest = series.latest(["a", "b", "c"])
    assert set(latest) == {"a", "b"} and latest["a"].mem_used == 200
    m = latest["a"].to_e2b()
    assert set(m) == E2B_KEYS
    assert m["timestampUnix"] == 1001 and m["timestamp"] == "1970-01-01T00:16:41Z" and m["cpuCount"] == 2


def test_compaction_averages_old_minutes_and_drops_expired(store):
    series = SeriesStore(store, retention_seconds=7200, downsample_after_seconds=3600)
    now = 100_000.0
    old_minute = (now - 3 * 3600) // 60 * 60  # past retention: dropped
    mid_minute = (now - 1800 - 3600) // 60 * 60  # older than an hour, inside retention: averaged
    rows = [_s("a", old_minute + i, cpu=5) for i in range(3)]
    rows += [_s("a", mid_minute + i, cpu=c, mem=m) for i, (c, m) in enumerate([(10, 100), (20, 300), (30, 500)])]
    rows += [_s("a", now - 10, cpu=99)]  # recent raw sample stays raw
    series.write(rows)
    averaged, dropped = series.compact(now)
    assert averaged == 2  # two (sandbox, minute) groups were folded ...
    got = series.range("a")
    assert len(got) == 2  # ... the expired one then dropped
    minute, recent = got
    assert minute.step == DOWNSAMPLE_STEP and minute.ts == mid_minute
    assert abs(minute.cpu_pct - 20) < 1e-9 and minute.mem_used == 300
    assert recent.step == 0 and recent.cpu_pct == 99
    assert series.compact(now) == (0, 0)  # idempotent


def test_cpu_percent_is_share_of_quota():
    assert cpu_percent(0, 500_000_000, 1.0, 1.0) == 50.0
    assert cpu_percent(0, 500_000_000, 1.0, 0.5) == 100.0
    assert cpu_percent(0, 1_000_000_000, 1.0, 2.0) == 50.0
    assert cpu_percent(10, 5, 1.0, 1.0) == 0.0  # counter reset never goes negative
    assert cpu_percent(0, 10**12, 1.0, 1.0) == 100.0

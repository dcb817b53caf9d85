"""The benchmark's own arithmetic and report (no timing here: the numbers live in the benchmark)."""
import pytest

from epics_bridge.bench.report import ack_summary, evaluate, heartbeat_summary, latency_summary, render


def test_latency_summary_gives_percentiles_in_milliseconds():
    summary = latency_summary([i / 1000.0 for i in range(1, 101)], timeouts=2)
    assert summary["cycles"] == 100 and summary["timeouts"] == 2
    assert summary["median_ms"] == pytest.approx(50.5)
    assert summary["p90_ms"] == pytest.approx(90.1)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert (summary["min_ms"], summary["max_ms"]) == (1.0, 100.0)


def test_latency_summary_without_samples_has_no_figures():
    summary = latency_summary([], timeouts=5)
    assert summary["cycles"] == 0 and summary["timeouts"] == 5 and summary["median_ms"] is None


def test_regular_heartbeats_are_within_period_and_stamps_outside_the_window_ignored():
    stamps = {"A": [-5.0, 0.2, 1.2, 2.203, 3.2], "B": [0.5, 1.499, 2.5, 3.5, 9.0]}
    hb = heartbeat_summary(stamps, period=1.0, window=(0.0, 4.0))
    assert hb["within_period"] is True
    assert hb["intervals"] == 6 and hb["silent_pvs"] == 0 and hb["stale_pvs"] == 0
    assert hb["max_error_ms"] == pytest.approx(3.0)


def test_a_skipped_pulse_is_not_within_period():
    hb = heartbeat_summary({"A": [0.2, 1.2, 3.2, 4.2]}, period=1.0, window=(0.0, 5.0))
    assert hb["within_period"] is False
    assert (hb["silent_pvs"], hb["stale_pvs"]) == (0, 0)
    assert hb["max_error_ms"] == pytest.approx(1000.0)


def test_a_pv_that_pulsed_once_is_silent():
    hb = heartbeat_summary({"A": [0.2, 1.2, 2.2, 3.2], "B": [0.7]}, period=1.0, window=(0.0, 4.0))
    assert hb["within_period"] is False and hb["silent_pvs"] == 1


def test_a_pv_that_stopped_pulsing_before_the_window_ended_is_stale():
    hb = heartbeat_summary({"A": [0.2, 1.2, 2.2]}, period=1.0, window=(0.0, 6.0))
    assert hb["within_period"] is False and hb["stale_pvs"] == 1
    assert hb["max_error_ms"] == pytest.approx(0.0)


def test_ack_summary_reports_the_worst_round_and_the_missing_acknowledges():
    ack = ack_summary([{"a": 0.1, "b": 0.3}, {"a": 0.2}], expected=2)
    assert ack["worst_ms"] == pytest.approx(300.0)
    assert ack["median_ms"] == pytest.approx(200.0)
    assert ack["missing"] == 1 and ack["per_round_ms"] == [pytest.approx(300.0), pytest.approx(200.0)]


def _results(ours=1.0, floor=1.0, flat=2.0, scale=None):
    medians = {"ours": ours, "floor": floor, "v5_flat": flat}
    latency = {k: {"latency": {"median_ms": v}} for k, v in medians.items()}
    latency["ours"]["idle"] = {"cpu_percent": 0.2}
    return {"responders": latency, "scale": scale or []}


def _targets(results):
    return {t["target"]: t for t in evaluate(results)}


def test_targets_are_ratios_against_the_same_run():
    targets = _targets(_results(ours=1.0, floor=1.0, flat=2.0))
    assert targets["median cycle vs floor"]["value"] == pytest.approx(1.0)
    assert targets["median cycle vs floor"]["pass"] is True
    assert targets["median cycle vs 5.0.0 flat out"]["value"] == pytest.approx(0.5)
    assert targets["idle CPU, one task"]["pass"] is True
    assert _targets(_results(ours=1.0, floor=0.5))["median cycle vs floor"]["pass"] is False


def test_scale_targets_fail_on_excess_and_on_missing_acknowledges_and_are_na_when_not_measured():
    assert _targets(_results())["RSS, 200 tasks"]["pass"] is None
    step = {"tasks": 200, "rss_mb": 300.0, "cpu_percent": 3.0, "reference_cpu_percent": 2.0,
            "heartbeat": heartbeat_summary({"A": [0.5, 1.5, 2.5]}, 1.0, (0.0, 3.0)),
            "ack": ack_summary([{"a": 0.1}], expected=200)}
    targets = _targets(_results(scale=[step]))
    assert targets["RSS, 200 tasks"]["pass"] is False
    assert targets["idle CPU, 200 tasks vs 200 plain puts/s"]["value"] == pytest.approx(1.5)
    assert targets["idle CPU, 200 tasks vs 200 plain puts/s"]["pass"] is True
    assert targets["heartbeats of 200 tasks within period"]["pass"] is True
    assert targets["all 200 acknowledge one trigger"]["pass"] is False
    assert "199 acknowledges missing" in targets["all 200 acknowledge one trigger"]["measured"]


def test_render_shows_machine_responders_and_verdicts():
    results = _results(ours=1.0, floor=0.5)
    results["machine"] = {"cpu": "Test CPU", "cores": 2, "python": "3.x", "p4p": "4.3.0"}
    results["responders"]["v5_default"] = {"label": "x", "error": "skipped (--no-upstream)"}
    text = render(results)
    assert "Test CPU, 2 cores" in text
    assert "| median cycle vs floor | 2.00x | <= 1.25x | **FAIL** |" in text
    assert "| RSS, 200 tasks | not measured | <= 250 MB | n/a |" in text
    assert "not measured: skipped (--no-upstream)" in text


"""The benchmark's own arithmetic and report (no timing here: the numbers live in the benchmark)."""

import pytest

from benchmarks.report import ack_summary, evaluate, heartbeat_summary, latency_summary, render


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


def test_the_ack_cell_shows_the_longest_client_put_and_the_longest_span_at_the_ioc():
    ack = ack_summary([{"a": 0.9}, {"a": 1.2}], expected=1, puts=[0.5, 0.4], spans=[0.7, None])
    assert ack["ioc_span_ms"] == [pytest.approx(700.0), None]
    results = _results(scale=[{**_step(1000, 10), "ack": ack}])
    assert "| 1200 (1050; 500; 700) |" in render(results)


def _results(ours=1.0, floor=1.0, flat=2.0, scale=None):
    medians = {"ours": ours, "floor": floor, "v5_flat": flat}
    latency = {k: {"latency": {"median_ms": v}} for k, v in medians.items()}
    latency["ours"]["idle"] = {"cpu_percent": 0.1}
    return {"responders": latency, "scale": scale or []}


def _targets(results):
    return {t["target"]: t for t in evaluate(results)}


def test_targets_are_ratios_against_the_same_run():
    targets = _targets(_results(ours=1.0, floor=2.0, flat=4.0))
    assert targets["median cycle vs floor"]["value"] == pytest.approx(0.5)
    assert targets["median cycle vs floor"]["pass"] is True
    assert targets["median cycle vs 5.0.0 flat out"]["value"] == pytest.approx(0.25)
    assert targets["idle CPU, one task"]["pass"] is True
    assert _targets(_results(ours=1.0, floor=1.5))["median cycle vs floor"]["pass"] is False  # 0.67x > 0.5x


def test_a_skipped_pulse_is_counted():
    hb = heartbeat_summary({"A": [0.2, 1.2, 3.2, 4.2, 6.3], "B": [0.5, 1.5, 2.5, 3.5, 4.5]}, 1.0, (0.0, 7.0))
    assert hb["skipped"] == 2 and hb["stale_pvs"] == 1  # B fell silent at 4.5 s of 7


def _step(tasks, files, pss=400.0, cpu=3.0, reference=4.0, beats=None, acks=None):
    beats = beats or {f"T{i}": [0.5, 1.51, 2.5, 3.5] for i in range(100)}
    return {
        "tasks": tasks,
        "files": files,
        "pss_mb": pss,
        "cpu_percent": cpu,
        "reference_cpu_percent": reference,
        "heartbeat": heartbeat_summary(beats, 1.0, (0.0, 4.0)),
        "ack": ack_summary([acks or {f"T{i}": 1.0 for i in range(tasks)}], expected=tasks),
    }


SPREAD = "1000 tasks in 10 files"


def test_the_service_targets_use_the_spread_step_and_the_one_file_step():
    targets = _targets(_results(scale=[_step(1000, 10), _step(1000, 1, acks={f"T{i}": 0.9 for i in range(1000)})]))
    assert targets[f"PSS of the whole service, {SPREAD}"]["pass"] is True
    assert targets[f"idle CPU, {SPREAD} vs 1000 plain puts/s"]["value"] == pytest.approx(0.75)
    assert targets[f"heartbeat error p99, {SPREAD}"]["value"] == pytest.approx(10.0)
    assert targets[f"heartbeat error p99, {SPREAD}"]["pass"] is True
    assert targets["all 1000 in 10 files acknowledge one batch trigger"]["pass"] is True
    assert targets["all 1000 in one file acknowledge one batch trigger"]["value"] == pytest.approx(0.9)
    assert targets["all 1000 in one file acknowledge one batch trigger"]["pass"] is True
    assert targets["heartbeat error p99, 1000 tasks in one file"]["pass"] is True


def test_service_targets_fail_on_excess_skipped_pulses_missing_acknowledges_and_are_na_unmeasured():
    assert _targets(_results())[f"PSS of the whole service, {SPREAD}"]["pass"] is None
    skipping = {"A": [0.5, 1.5, 3.5], "B": [0.5, 1.5, 2.5, 3.5]}
    targets = _targets(_results(scale=[_step(1000, 10, pss=600.0, cpu=5.0, beats=skipping, acks={"T0": 0.1})]))
    assert targets[f"PSS of the whole service, {SPREAD}"]["pass"] is False
    assert targets[f"idle CPU, {SPREAD} vs 1000 plain puts/s"]["pass"] is False  # 1.25x
    hb = targets[f"heartbeat error p99, {SPREAD}"]
    assert hb["value"] is not None and hb["pass"] is False and "1 skipped" in hb["measured"]
    ack = targets["all 1000 in 10 files acknowledge one batch trigger"]
    assert ack["pass"] is False and "999 acknowledges missing" in ack["measured"]
    assert targets["all 1000 in one file acknowledge one batch trigger"]["pass"] is None


def test_render_shows_machine_responders_service_rows_and_verdicts():
    results = _results(ours=1.0, floor=0.5, scale=[{**_step(1000, 10), "processes": 11, "threads": 2030}])
    results["machine"] = {"cpu": "Test CPU", "cores": 2, "python": "3.x", "p4p": "4.3.0"}
    results["responders"]["v5_default"] = {"label": "x", "error": "skipped (--no-upstream)"}
    text = render(results)
    assert "Test CPU, 2 cores" in text
    assert "| median cycle vs floor | 2.00x | <= 0.50x | **FAIL** | 0.57-0.65x | 0.54-0.59x |" in text
    assert "| all 1000 in one file acknowledge one batch trigger | not measured | <= 1.000 s | n/a | 6.6 s |" in text
    assert "| 1000 | 10 | 11 | – | 400 | 2030 | 3.00 | 4.00 | 0.75x |" in text
    assert "not measured: skipped (--no-upstream)" in text


def test_a_quick_run_is_judged_at_its_own_sizes():
    quick = _results(scale=[_step(1, 1), _step(200, 1, cpu=3.0, reference=5.0), _step(200, 2)])
    targets = _targets(quick)
    assert targets["idle CPU, 200 tasks in 2 files vs 200 plain puts/s"]["value"] == pytest.approx(0.75)
    assert targets["idle CPU, 200 tasks in one file vs 200 plain puts/s"]["value"] == pytest.approx(0.6)
    assert targets["idle CPU, 200 tasks in one file vs 200 plain puts/s"]["previous"] == "1.35-1.70x"

"""Alert rules: fire after the duration, resolve when back to normal, validation says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.alerts import AlertEngine, Rule, metric_value, parse_rules


def frame(t: float, cpu: float = 10.0, mem: float = 20.0, disks: tuple[float, ...] = (50.0,)) -> dict[str, Any]:
    return {
        "t": t,
        "cpu": {"total": cpu, "per_core": [cpu], "count": 2},
        "mem": {"percent": mem},
        "swap": {"total": 0, "percent": 0.0},
        "disks": [{"percent": p} for p in disks],
        "load": [3.0, 2.0, 1.0],
        "temps": [],
    }


def test_fires_only_after_the_breach_lasted_the_duration_then_resolves() -> None:
    engine = AlertEngine([Rule("cpu", 90, 10)])
    assert engine.evaluate(frame(0, cpu=95)) == []
    assert engine.evaluate(frame(5, cpu=97)) == []
    fired = engine.evaluate(frame(10, cpu=99))
    assert [name for name, _ in fired] == ["alert"]
    alert = fired[0][1]
    assert alert["label"] == "CPU > 90 % for 10 s"
    assert (alert["since"], alert["value"], alert["state"]) == (0, 99, "firing")
    assert engine.evaluate(frame(11, cpu=98)) == []  # once, not every frame
    assert engine.active()[0]["value"] == 98
    resolved = engine.evaluate(frame(12, cpu=40))
    assert [(n, p["alert_id"], p["state"]) for n, p in resolved] == [("resolved", alert["alert_id"], "resolved")]
    assert engine.active() == []


def test_a_dip_restarts_the_duration() -> None:
    engine = AlertEngine([Rule("cpu", 90, 10)])
    for t, cpu in [(0, 95), (6, 95), (7, 50), (8, 95), (17, 95)]:
        assert engine.evaluate(frame(t, cpu=cpu)) == [], t
    assert [n for n, _ in engine.evaluate(frame(18, cpu=95))] == ["alert"]


def test_removing_a_rule_resolves_its_alert_and_keeps_the_others() -> None:
    cpu, mem = Rule("cpu", 50, 0), Rule("memory", 10, 0)
    engine = AlertEngine([cpu, mem])
    assert len(engine.evaluate(frame(0, cpu=60, mem=30))) == 2
    events = engine.set_rules([mem], at=1)
    assert [(n, p["metric"], p["reason"]) for n, p in events] == [("resolved", "cpu", "rule removed")]
    assert [a["metric"] for a in engine.active()] == ["memory"]
    assert engine.evaluate(frame(2, cpu=60, mem=30)) == []  # memory still firing, not re-fired


def test_metric_values() -> None:
    f = frame(0, disks=(10.0, 93.5))
    assert metric_value(f, "disk") == 93.5
    assert metric_value(f, "load") == 1.5  # per core
    assert metric_value(f, "swap") is None  # no swap: a rule on it never fires
    assert metric_value(f, "temperature") is None


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"metric": "cpu"}, "must be a list"),
        ([{"metric": "gpu", "above": 1}], "metric must be one of"),
        ([{"metric": "cpu", "above": 101}], "above must be a number from 0 to 100"),
        ([{"metric": "cpu", "above": True}], "above must be a number"),
        ([{"metric": "cpu", "above": 50, "for_s": -1}], "for_s must be"),
        ([{"metric": "cpu", "above": 50}, {"metric": "cpu", "above": 50.0}], "duplicate"),
    ],
)
def test_parse_rules_names_the_problem(rules: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(rules)


def test_parse_rules_round_trips_its_own_output() -> None:
    rules = [Rule("memory", 80, 5), Rule("load", 2.5, 60)]
    assert parse_rules([r.as_dict() for r in rules]) == rules

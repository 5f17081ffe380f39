"""Threshold rules with a duration ("CPU > 90 % for 10 s"): pure state, fed one frame at a time.

A rule fires once its metric has stayed above the threshold for ``for_s`` seconds of frames,
and resolves at the first frame back at or below it. Time is the frames' own ``t``, so a paused
sampler neither fires nor resolves anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

__all__ = ["DEFAULT_RULES", "METRICS", "AlertEngine", "Rule", "metric_value", "parse_rules"]

# metric -> (label, unit, highest sensible threshold)
METRICS: dict[str, tuple[str, str, float]] = {
    "cpu": ("CPU", "%", 100.0),
    "memory": ("Memory", "%", 100.0),
    "swap": ("Swap", "%", 100.0),
    "disk": ("Fullest disk", "%", 100.0),
    "load": ("Load per core", "", 1000.0),
    "temperature": ("Hottest sensor", "°C", 200.0),
}
MAX_RULES = 20
MAX_DURATION = 3600.0


@dataclass(frozen=True, slots=True)
class Rule:
    metric: str
    above: float
    for_s: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.metric}>{self.above:g}/{self.for_s:g}s"

    @property
    def label(self) -> str:
        name, unit, _ = METRICS[self.metric]
        unit = f" {unit}" if unit else ""
        return f"{name} > {self.above:g}{unit}" + (f" for {self.for_s:g} s" if self.for_s else "")

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "above": self.above, "for_s": self.for_s, "key": self.key, "label": self.label}


DEFAULT_RULES = (
    Rule("cpu", 90, 10),
    Rule("memory", 90, 10),
    Rule("swap", 80, 30),
    Rule("disk", 90, 0),
    Rule("temperature", 85, 10),
)


def parse_rules(obj: Any) -> list[Rule]:
    """Rules from JSON (``[{"metric", "above", "for_s"}]``); ``ValueError`` names the first problem."""
    if not isinstance(obj, list):
        raise ValueError('"rules" must be a list of {"metric", "above", "for_s"} objects')
    if len(obj) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} rules")
    rules: list[Rule] = []
    for i, item in enumerate(obj):
        if not isinstance(item, dict) or set(item) - {"metric", "above", "for_s", "key", "label"}:
            raise ValueError(f'rule {i}: expected an object with "metric", "above" and "for_s"')
        metric = item.get("metric")
        if metric not in METRICS:
            raise ValueError(f"rule {i}: metric must be one of {', '.join(METRICS)}")
        above, for_s = item.get("above"), item.get("for_s", 0)
        top = METRICS[metric][2]
        if not _number(above) or not 0 <= above <= top:
            raise ValueError(f"rule {i}: above must be a number from 0 to {top:g}")
        if not _number(for_s) or not 0 <= for_s <= MAX_DURATION:
            raise ValueError(f"rule {i}: for_s must be a number of seconds from 0 to {MAX_DURATION:g}")
        rule = Rule(metric, float(above), float(for_s))
        if any(r.key == rule.key for r in rules):
            raise ValueError(f"rule {i}: duplicate of an earlier rule ({rule.label})")
        rules.append(rule)
    return rules


def _number(x: Any) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def metric_value(frame: dict[str, Any], metric: str) -> float | None:
    """The value a rule compares, or ``None`` when this machine does not have it (no sensors)."""
    if metric == "cpu":
        return float(frame["cpu"]["total"])
    if metric == "memory":
        return float(frame["mem"]["percent"])
    if metric == "swap":
        return float(frame["swap"]["percent"]) if frame["swap"]["total"] else None
    if metric == "disk":
        return max((float(d["percent"]) for d in frame["disks"]), default=None)
    if metric == "load":
        return round(float(frame["load"][0]) / max(int(frame["cpu"]["count"]), 1), 2)
    if metric == "temperature":
        return max((float(s["current"]) for s in frame["temps"]), default=None)
    raise KeyError(metric)


@dataclass(slots=True)
class _State:
    since: float | None = None  # when the current breach began
    firing: dict[str, Any] | None = None  # the alert payload while firing


class AlertEngine:
    """Feed frames with :meth:`evaluate`; it returns the ``alert`` / ``resolved`` events to publish."""

    def __init__(self, rules: list[Rule] | tuple[Rule, ...] = DEFAULT_RULES) -> None:
        self.rules: list[Rule] = list(rules)
        self._states: dict[str, _State] = {r.key: _State() for r in self.rules}

    def active(self) -> list[dict[str, Any]]:
        return [s.firing for s in self._states.values() if s.firing is not None]

    def set_rules(self, rules: list[Rule], at: float) -> list[tuple[str, dict[str, Any]]]:
        """Replace the rules; alerts of rules that are gone resolve now, unchanged rules carry on."""
        events: list[tuple[str, dict[str, Any]]] = []
        keep = {r.key for r in rules}
        for key, state in self._states.items():
            if key not in keep and state.firing is not None:
                events.append(("resolved", {**state.firing, "state": "resolved", "at": at, "reason": "rule removed"}))
        self._states = {r.key: self._states.get(r.key) or _State() for r in rules}
        self.rules = list(rules)
        return events

    def evaluate(self, frame: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        t = float(frame["t"])
        events: list[tuple[str, dict[str, Any]]] = []
        for rule in self.rules:
            state = self._states[rule.key]
            value = metric_value(frame, rule.metric)
            if value is not None and value > rule.above:
                if state.since is None:
                    state.since = t
                if state.firing is None and t - state.since >= rule.for_s:
                    state.firing = {
                        **rule.as_dict(),
                        "alert_id": f"{rule.key}@{state.since:.3f}",
                        "state": "firing",
                        "value": value,
                        "since": state.since,
                        "at": t,
                    }
                    events.append(("alert", state.firing))
                elif state.firing is not None:
                    state.firing["value"] = value  # the latest, for the snapshot
            else:
                state.since = None
                if state.firing is not None:
                    resolved = {
                        **state.firing,
                        "state": "resolved",
                        "value": value,
                        "at": t,
                        "reason": "back to normal",
                    }
                    state.firing = None
                    events.append(("resolved", resolved))
        return events

"""Connect/disconnect churn leaves nothing behind: ``python -m bench.churn`` at test size.

The full run is ``python -m bench.churn --cycles 10000``; this one asserts the same things on
fewer cycles so it fits in the test suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import churn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return churn.run(3000, concurrency=32, warmup=600, out=None)


def test_churn_leaves_no_subscriber_session_task_or_memory_behind(figures: dict[str, Any]) -> None:
    f = figures
    report = "\n".join(churn.report(f))
    assert f["cycles"] == 3000, report
    assert f["errors"] == {}, report
    assert f["abrupt"] == 1000, report  # a third end with a reset or unread data
    assert f["done"]["answer"] + f["done"]["abandon"] == 1000, report  # a third are /bidi/ sessions
    # Every trigger ended as it should: answered (200), or client gone after the grace period (410).
    assert f["triggers"] == {"answer 200": f["done"]["answer"], "abandon 410": f["done"]["abandon"]}, report
    # Nothing left: subscribers, sessions, pending requests, counted streams, tasks, connections.
    assert f["subscribers_left"] == 0, report
    assert f["topics_left"] == 0, report
    assert f["correlator"] == {"sessions": 0, "pending": 0}, report
    assert f["limiter_streams"] == 0, report
    assert f["watchdog_streams"] == 0, report
    assert f["tasks_left"] == {}, report
    assert f["tasks_after"] == f["tasks_before"], report
    assert f["connections_left"] == 0, report
    assert f["rss_growth_mib"] < churn.RSS_LIMIT_MIB, report
    # And nobody complained: no warning or error logged, no "Task was destroyed", no warning.
    assert f["log"] == [], report
    assert f["task_destroyed"] == 0, report
    assert f["warnings"] == [], report
    assert f["unraisable"] == [], report
    assert f["problems"] == [], report


def test_the_memory_backend_forgets_the_topics_of_sessions_that_are_gone(figures: dict[str, Any]) -> None:
    assert figures["backend_topics_bidi"] == 0

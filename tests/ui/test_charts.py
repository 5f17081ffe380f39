"""The dashboard's charts (issue 18): values under the cursor, byte axes in 1/2/5 steps of one
binary unit (they read 381/191 MiB/s), a time label about every minute of a 5-minute window
(there was one per 5 minutes); and one time format on every page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise

import pytest
from playwright.sync_api import Page, expect

from tests.rig import LiveServer

from .rig import Contexts, join_chat, log_in_exec, shot, showcase

pytestmark = pytest.mark.browser

UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
CLOCK = re.compile(r"^\d\d:\d\d:\d\d$")
MINUTES = re.compile(r"^\d\d:\d\d$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with showcase(tmp_path_factory.mktemp("ui-charts")) as srv:
        yield srv


def byte_value(label: str) -> float:
    if label == "0":
        return 0.0
    number, unit = label.removesuffix("/s").split()
    return float(number) * UNITS[unit]


def assert_binary_125(labels: list[str]) -> None:
    values = [byte_value(v) for v in labels]
    steps = {round(b - a) for a, b in pairwise(values)}
    assert len(steps) == 1, labels  # evenly spaced
    (step,) = steps
    unit = max(u for u in UNITS.values() if u <= step)
    assert step / unit in (1, 2, 5, 10, 20, 50, 100, 200, 500), f"step {step} B: {labels}"
    assert len({v.split()[-1] for v in labels if v != "0"}) == 1, f"one unit on an axis: {labels}"


SYNTHETIC = """async ([peak, seconds]) => {
  const { Chart } = await import('/dashboard/static/charts.js');
  const { rate } = await import('/dashboard/static/format.js');
  const panel = document.createElement('section');
  panel.className = 'panel chart-panel';
  panel.style.width = '460px';
  panel.innerHTML = '<div class="legend"></div><div class="chart"></div>';
  document.body.prepend(panel);
  const box = panel.querySelector('.chart');
  const chart = new Chart(box, { series: [{ key: 'rx', label: 'in', color: '#a371f7' }], format: rate, bytes: true });
  const now = Math.floor(Date.now() / 1000);
  const points = [];
  for (let t = now - seconds; t <= now; t += 1) points.push({ t, rx: peak * (0.5 + 0.5 * Math.sin(t / 20)) });
  chart.reset(points, 300);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return { x: box.dataset.xTicks.split(' | '), y: box.dataset.yTicks.split(' | ') };
}"""


@pytest.mark.parametrize("peak", [400 * 1024**2, 3.3 * 1024**2, 700 * 1024, 90])
def test_byte_axes_step_in_binary_units(peak: float, server: LiveServer, new_context: Contexts) -> None:
    page = new_context().new_page()
    page.goto(server.url + "/dashboard/")
    got = page.evaluate(SYNTHETIC, [peak, 300])
    assert_binary_125(got["y"])
    assert 3 <= len(got["y"]) <= 8, got["y"]
    # A label a minute over the 5-minute window, as HH:MM.
    assert 4 <= len(got["x"]) <= 6, got["x"]
    assert all(MINUTES.match(t) for t in got["x"]), got["x"]


def test_hover_shows_the_values_under_the_cursor(server: LiveServer, new_context: Contexts) -> None:
    page = new_context().new_page()
    page.goto(server.url + "/dashboard/")
    chart = page.locator("#chart-net .chart")
    expect(chart).to_have_attribute("data-points", re.compile(r"^([4-9]|\d\d+)$"), timeout=15_000)
    assert_binary_125((chart.get_attribute("data-y-ticks") or "").split(" | "))
    latest = page.locator("#chart-net .legend b").first.text_content()
    box = page.locator("#chart-net .u-over").bounding_box()
    assert box
    page.mouse.move(box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2)
    at = page.locator("#chart-net .legend .at")
    expect(at).to_have_text(re.compile(r"^at \d\d:\d\d:\d\d$"))
    hovered = float(chart.get_attribute("data-hover") or "0")
    assert hovered > 0
    shot(page, "charts-hover")
    page.mouse.move(5, 5)
    expect(at).to_have_text("")
    assert latest is not None


def times(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_text_contents()]


def test_one_time_format_everywhere(server: LiveServer, new_context: Contexts) -> None:
    """24-hour local time, HH:MM:SS, or HH:MM where seconds mean nothing (chat messages, chart
    axes); never a locale's "2:30:18 PM"."""
    page = new_context(locale="en-US").new_page()
    page.goto(server.url + "/dashboard/")
    expect(page.locator("#last-frame")).to_have_text(CLOCK)
    started = times(page, "#proc-rows td:last-child")
    assert started
    assert all(CLOCK.match(t) or re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", t) for t in started), started[:5]

    join_chat(page, server.url, "clocks")
    page.fill("#text", "what time is it")
    page.press("#text", "Enter")
    stamp = page.locator("#messages li.msg .time").last
    expect(stamp).to_have_text(MINUTES)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", stamp.get_attribute("title") or "")

    log_in_exec(page, server.url)
    page.fill("#command", "true")
    page.click("#start")
    expect(page.locator("#runs li .started").first).to_have_text(CLOCK)

"""The technician's page in a real headless Chromium, on the real service.

One service for the module: a replay of twelve days of three simulated sensors
with a leak (from day 6) and one-minute spikes, sent over a socket as an RTU
would, ending now; sensor 003 went quiet a day ago. The page is served with a
token. Chromium is Debian's (``make test`` installs it; never skipped), driven
by Selenium through Debian's chromedriver. Screenshots go to the test's
temporary folder (their paths are printed).
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from core import frames
from core.simulator import Simulator, SimulatorSettings
from storage.store import Store
from tests.harness import TZ, PeerServer, Service, run_cli, wait_for, write_config

pytestmark = pytest.mark.slow

TOKEN = "cabinet-token-1234"
DAYS = 12
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The flags chromium needs here: headless without a sandbox, and nothing that
# reaches for the network (this machine's closed network floods refusals).
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1000")
VALUE_RGB = (31, 95, 168)  # the reading line's colour in static/sensor.js


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    """The service, its replayed store and what the replay contained."""

    def __init__(self, directory: Path) -> None:
        now = int(time.time()) // 60 * 60
        self.start = now - DAYS * 86400
        self.sim = Simulator(SimulatorSettings(
            sensors=3, seed=3, start=self.start, faults=frozenset({"leak", "spike"}),
            fault_rate=2.0, leak_day=6, leak_fraction=1.0, realtime_cap=False))
        minutes = DAYS * 1440
        self.quiet_from = now - 86400  # sensor 003 sends nothing after this
        self.readings = [r for r in self.sim.readings(self.start, minutes)
                         if r.sensor != "003" or r.time < self.quiet_from]
        self.rtu, self.upstream = PeerServer(), PeerServer()
        self.store_path = directory / "site.lmdb"
        token_file = directory / "web.token"
        token_file.write_text(TOKEN + "\n")
        self.port = free_port()
        self.config = write_config(
            directory / "site.toml", serial_port=self.rtu.url, upstream_port=self.upstream.url,
            store=self.store_path, initial_data="conf/initial_data.csv",
            sections={"web": {"listen": f"127.0.0.1:{self.port}", "token_file": str(token_file)},
                      "system": {"silence_minutes": 60}, "train": {"min_days": 3650}})
        self.service = Service(self.config).start()
        self.url = f"http://127.0.0.1:{self.port}/"

    def replay(self) -> None:
        self.rtu.wait_connected(60)
        self.upstream.wait_connected(60)
        lines = [frames.encode(r, TZ) for r in self.readings]
        for i in range(0, len(lines), 5000):
            self.rtu.send(b"".join(lines[i:i + 5000]))
        with Store(self.store_path, readonly=True) as store:
            def caught_up() -> bool:
                with store.read() as view:
                    head = view.journal_head()
                    return (head >= len(self.readings) and view.offset("detector") == head
                            and view.offset("night_flow") == head)
            wait_for(caught_up, timeout=240, interval=0.5, what="the replay stored and judged")

    def spikes(self, sensor: int, since: int) -> list[int]:
        """Minutes of sensor's flow spikes after ``since`` (the simulator's ground truth)."""
        return [r.time for r in self.readings
                if r.sensor == f"{sensor:03d}" and r.time >= since
                and "spike" in self.sim.truth(sensor, r.time)]

    def close(self) -> None:
        try:
            self.service.terminate(timeout=30)
        finally:
            self.rtu.close()
            self.upstream.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    s = Site(tmp_path_factory.mktemp("web-site"))
    try:
        s.replay()
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=ChromeService(CHROMEDRIVER))
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def login(browser, site: Site) -> None:
    browser.get(site.url + "?token=" + TOKEN)


def open_sensor(browser, site: Site, sensor: str, range_name: str) -> dict:
    browser.get(f"{site.url}sensor/{sensor}?range={range_name}")
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready === '1'"),
             timeout=30, what="charts drawn")
    return browser.execute_script("return window.wdn.data")


def screenshot(browser, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def painted(browser, chart: str, rgb: tuple[int, int, int] | None = None) -> int:
    """Pixels drawn on a chart's canvas (of colour ``rgb``, give or take anti-aliasing)."""
    return browser.execute_script("""
        const [name, rgb] = arguments;
        const canvas = window.wdn.charts[name].ctx.canvas;
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < pixels.length; i += 4) {
          if (pixels[i + 3] === 0) continue;
          if (!rgb || (Math.abs(pixels[i] - rgb[0]) < 40 && Math.abs(pixels[i + 1] - rgb[1]) < 40
                       && Math.abs(pixels[i + 2] - rgb[2]) < 40)) n++;
        }
        return n;""", chart, list(rgb) if rgb else None)


def test_the_address_is_logged_before_the_actors_start(site):
    log = site.service.log()
    line = f"web page at {site.url}"
    assert line in log
    assert log.index(line) < log.index("started transmitter")


def test_a_wrong_or_missing_token_gets_401_and_healthz_needs_none(site, browser, shots):
    for url, headers in ((site.url, {}), (site.url + "metrics", {}),
                         (site.url + "?token=wrong-token-000", {}),
                         (site.url + "api/overview", {"Authorization": "Bearer wrong-token-000"})):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert refused.value.code == 401, url
        assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    with urllib.request.urlopen(site.url + "healthz", timeout=10) as health:
        assert health.status == 200 and json.load(health)["answered"] is True
    request = urllib.request.Request(site.url + "metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as metrics:
        assert b'wdn_readings_total{sensor="001"}' in metrics.read()

    browser.delete_all_cookies()
    browser.get(site.url + "?token=wrong-token-000")
    assert browser.title == "401 Unauthorized"
    assert "wrong token" in browser.find_element(By.TAG_NAME, "p").text
    screenshot(browser, shots, "wrong-token-401")
    login(browser, site)  # the right one: a cookie, and back to the page without it
    assert browser.current_url == site.url
    assert browser.find_elements(By.CSS_SELECTOR, "table.sensors tr[data-sensor]")


def test_overview_shows_the_quiet_sensor_as_stale_and_the_leak(site, browser, shots):
    login(browser, site)
    rows = {row.get_attribute("data-sensor"): row
            for row in browser.find_elements(By.CSS_SELECTOR, "table.sensors tr[data-sensor]")}
    assert sorted(rows) == ["001", "002", "003"]
    assert "stale" in rows["003"].get_attribute("class").split()
    assert rows["003"].find_element(By.CSS_SELECTOR, ".badge").text == "stale"
    for live in ("001", "002"):
        assert rows[live].find_element(By.CSS_SELECTOR, ".badge").text == "live"
        assert "NIGHT" in rows[live].find_element(By.CSS_SELECTOR, "td.flags").text
        # The newest nights are leak signs ("!") after the leak began on day 6.
        marks = rows[live].find_elements(By.CSS_SELECTOR, "td.nights .night")
        assert marks and marks[-1].text == "!"
    assert "v1" in rows["001"].text
    screenshot(browser, shots, "overview")


def test_charts_draw_with_band_forecast_and_night_flow(site, browser, shots):
    login(browser, site)
    data = open_sensor(browser, site, "001", "7d")
    for chart in ("flow", "pressure"):
        assert painted(browser, chart, VALUE_RGB) > 1000, f"{chart}: no reading line drawn"
        columns = data["charts"][chart]["data"]
        assert len(columns["x"]) <= 2 * 2000 + 300  # readings, hourly band/forecast, markers
        assert sum(v is not None for v in columns["y"]["value"]) <= 2000
        assert any(v is not None for v in columns["y"]["band_low"])
        assert any(v is not None for v in columns["y"]["forecast"])
    assert painted(browser, "night") > 500
    night = data["night"]["data"]["y"]
    assert any(v is not None for v in night["leak"]), "no leak night on the MNF chart"
    assert any(v is not None for v in night["threshold"])
    screenshot(browser, shots, "sensor-001-7d")
    data = open_sensor(browser, site, "001", "90d")
    assert data["readings"] == sum(1 for r in site.readings if r.sensor == "001")
    assert sum(v is not None for v in data["charts"]["flow"]["data"]["y"]["value"]) <= 2000
    assert painted(browser, "flow", VALUE_RGB) > 1000
    screenshot(browser, shots, "sensor-001-90d")


def test_flags_sit_where_they_were_raised_and_explain_themselves(site, browser, shots):
    login(browser, site)
    found = None
    for sensor in ("001", "002"):
        data = open_sensor(browser, site, sensor, "7d")
        spikes = site.spikes(int(sensor), data["since"])
        for quantity in ("flow", "pressure"):
            markers = {m["t"]: m for m in data["charts"][quantity]["markers"]}
            exported = run_cli(site.config, "export", "detections", "--sensor", sensor)
            assert exported.returncode == 0, exported.stderr
            lines = set(exported.stdout.splitlines())
            for t, marker in markers.items():
                assert marker["text"] in lines, "a marker's text is not an exported line"
                assert json.loads(marker["text"])[f"{quantity}_flags"], t
            caught = [t for t in spikes if t in markers and "VALUE" in markers[t]["methods"]]
            if caught and found is None:
                found = (sensor, quantity, markers[caught[0]])
        if found:
            break
    assert found, "no VALUE marker at any spike of sensors 001 and 002"

    # Hover the spike's marker: the explanation is `export detections`' line.
    sensor, quantity, marker = found
    open_sensor(browser, site, sensor, "7d")
    chart = browser.find_element(By.CSS_SELECTOR, f"#chart-{quantity} .u-over")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    x, y = browser.execute_script(
        "const [name, t, v] = arguments; const u = window.wdn.charts[name];"
        "return [u.valToPos(t, 'x'), u.valToPos(v, 'y')];", quantity, marker["t"], marker["y"])
    ActionChains(browser).move_to_element_with_offset(
        chart, x - chart.size["width"] / 2, y - chart.size["height"] / 2).perform()
    tip = browser.find_element(By.ID, "tip")
    wait_for(tip.is_displayed, timeout=5, what="the tooltip")
    assert marker["text"] in tip.text
    assert "VALUE" in tip.text.splitlines()[0]
    screenshot(browser, shots, f"sensor-{sensor}-{quantity}-flag-hover")

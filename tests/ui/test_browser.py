"""The pages in a real headless Chromium (Debian's chromium and chromium-driver).

One browser session for the module. Where the browser cannot start, the tests are
skipped with the reason, except where they must run ($CI, or
$STATEWARD_REQUIRE_BROWSER=1 as .ci/run sets): there they fail. The screenshots in
docs/img/ are taken here (with $STATEWARD_UI_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docs_blocks import ROOT
from tests.pg import required as pg_required

from .server import TALKY, running_ui, seed

TOKEN = "browser-token"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REQUIRE_ENV = "STATEWARD_REQUIRE_BROWSER"
SCREENSHOTS = ROOT / "docs" / "img"


def required() -> bool:
    """Whether a browser that cannot start is a failure here (CI, or asked for)."""
    return pg_required() or os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if required():
        pytest.fail(f"the browser tests must run here but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db: Path = tmp_path_factory.mktemp("browser") / "state.db"
    seed(db, TALKY)
    with running_ui(db, TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        _unavailable(f"selenium is not installed ({exc})")
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            _unavailable(f"{path} is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:
        _unavailable(f"Chromium did not start: {exc}")
    try:
        yield driver
    finally:
        driver.quit()


def navigate(driver: Any, css: str) -> None:
    """Click what ``css`` selects and wait (10 s at most) until the next page is loaded."""
    from selenium.webdriver.common.by import By

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, css).click()
    loaded(driver, page)


def loaded(driver: Any, page: Any) -> None:
    """Wait (10 s at most) until ``page`` (the old <html>) is gone and the next page has
    loaded completely, so that what the test finds next belongs to it."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    def gone(_: Any) -> bool:
        try:
            return bool(expected_conditions.staleness_of(page)(driver))
        except WebDriverException as exc:
            # chromedriver may say so instead of "stale" while the old page is unloading.
            if "does not belong to the document" in str(exc):
                return True
            raise

    wait = WebDriverWait(driver, 10)
    wait.until(gone)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def shot(driver: Any, name: str) -> None:
    """Save docs/img/ui-NAME.png when $STATEWARD_UI_SCREENSHOTS=1 (to refresh the docs)."""
    if os.environ.get("STATEWARD_UI_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"ui-{name}.png"))


def test_grid_to_instance_state_and_edit(browser: Any, site: str) -> None:
    """Open the grid, click to an instance, read its state and log, edit a key, see the
    new value and its history, and roll it back."""
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/?token={TOKEN}")
    assert "token" not in browser.current_url  # the token became a cookie
    assert browser.find_element(By.TAG_NAME, "h2").text == "etl"
    shot(browser, "grid")
    navigate(browser, 'a.cell[href*="/tasks/load"]')
    assert browser.find_element(By.CSS_SELECTOR, "h1 .id").text == "load"
    rows = browser.find_elements(By.CSS_SELECTOR, "#task-state td.key")
    assert [r.text for r in rows] == ["params"]
    assert browser.find_element(By.ID, "try-1").find_element(By.TAG_NAME, "h4")

    value = browser.find_element(By.CSS_SELECTOR, "#task-state textarea")
    value.clear()
    value.send_keys('{"limit": 99}')
    navigate(browser, "#task-state form.edit button")
    assert "Set key 'params'" in browser.find_element(By.CLASS_NAME, "question").text
    navigate(browser, "#confirm")
    shown = browser.find_element(By.CSS_SELECTOR, "#task-state textarea").get_attribute("value")
    assert '"limit": 99' in shown

    # The key's history: the edit (by the UI, as "api") over the task's own write.
    browser.find_element(By.CSS_SELECTOR, "#task-state tr.history summary").click()
    versions = browser.find_elements(By.CSS_SELECTOR, "#task-state table.versions tbody tr")
    assert [v.get_attribute("data-version") for v in versions] == ["2", "1"]
    assert '"limit": 99' in versions[0].text
    assert versions[0].find_element(By.CSS_SELECTOR, "td.who").text.startswith("api ")
    assert "etl/r1/load try 1" in versions[1].find_element(By.CSS_SELECTOR, "td.who").text
    shot(browser, "instance")

    # Roll back to the task's version, through the confirmation page.
    navigate(browser, '#task-state tr[data-version="1"] form.rollback button')
    assert "back to version 1" in browser.find_element(By.CLASS_NAME, "question").text
    navigate(browser, "#confirm")
    shown = browser.find_element(By.CSS_SELECTOR, "#task-state textarea").get_attribute("value")
    assert '"limit": 10' in shown
    browser.find_element(By.CSS_SELECTOR, "#task-state tr.history summary").click()
    newest = browser.find_element(By.CSS_SELECTOR, "#task-state table.versions tbody tr")
    assert newest.get_attribute("data-version") == "3"
    assert newest.find_element(By.CSS_SELECTOR, "td.who").text.startswith(
        "rollback to version 1 by api "
    )


def test_an_instance_shows_its_log(browser: Any, site: str) -> None:
    """A try's log is on its instance's page, under the attempt."""
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/")
    navigate(browser, 'a.cell[href*="/tasks/speak"]')
    log = browser.find_element(By.CSS_SELECTOR, "#try-1 pre.log").text
    assert "hello from speak" in log
    keys = [k.text for k in browser.find_elements(By.CSS_SELECTOR, "#task-state td.key")]
    assert keys == ["said"]


def test_an_xss_key_shows_as_text(browser: Any, site: str) -> None:
    """A key and value '<script>...' are shown as text and never run."""
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/runs/etl/r1/tasks/load")
    xss = "<script>window.pwned=1</script>"
    browser.find_element(By.CSS_SELECTOR, "form.add input[name=key]").send_keys(xss)
    browser.find_element(By.CSS_SELECTOR, "form.add input[name=value]").send_keys(f'"{xss}"')
    navigate(browser, "form.add button")
    navigate(browser, "#confirm")
    keys = [k.text for k in browser.find_elements(By.CSS_SELECTOR, "#task-state td.key")]
    assert xss in keys
    assert browser.execute_script("return window.pwned === undefined")


def test_run_and_asset_pages(browser: Any, site: str) -> None:
    """The run page draws its task graph and Gantt chart; the asset page shows the
    asset's state and the events that touched it, linked to the emitting instance."""
    from selenium.webdriver.common.by import By

    browser.get(f"{site}/runs/etl/r1")
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 2
    nodes = browser.find_elements(By.CSS_SELECTOR, "svg.graph a[data-task]")
    assert [n.get_attribute("data-task") for n in nodes] == ["extract", "load"]
    gantt_bars = 'svg.chart[aria-label="Gantt chart of attempts"] rect'
    assert len(browser.find_elements(By.CSS_SELECTOR, gantt_bars)) >= 3
    shot(browser, "run")
    from selenium.webdriver.common.keys import Keys

    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, "header input[type=search]").send_keys(
        "orders" + Keys.ENTER
    )
    loaded(browser, page)
    navigate(browser, 'a[href^="/assets/"]')
    assert browser.find_element(By.CSS_SELECTOR, "h1 .id").text == "orders"
    assert [k.text for k in browser.find_elements(By.CSS_SELECTOR, "td.key")] == ["watermark"]
    browser.find_element(By.CSS_SELECTOR, "#asset-state tr.history summary").click()
    who = browser.find_element(By.CSS_SELECTOR, "#asset-state table.versions td.who")
    assert who.text.startswith("etl/r1/load try 1")
    event = browser.find_element(By.CSS_SELECTOR, "#asset-events td.who")
    assert event.text == "etl/r1/load try 1"
    shot(browser, "asset")
    navigate(browser, "#asset-events td.who a")
    assert browser.current_url.endswith("/runs/etl/r1/tasks/load")

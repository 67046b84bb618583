"""The web UI in a real browser: Debian's headless Chromium driven by Selenium
through Debian's chromedriver, against `streamlit run` (started by the project's
harness, movieservice.devstack) and a real service process. Screenshots of each
step go to reports/ui/ (ignored by git).

Nothing here downloads a browser or a driver: both paths are given, and
Selenium Manager (which would look for them on the network) is made to fail.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from movieservice.devstack.processes import ServerProcess, ui_server
from movieservice.devstack.stack import ServiceProcess
from tests.conftest import PROJECT_ROOT
from tests.support.ui import UI_TOKEN, metrics_url, ui_service

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
SCREENSHOTS = PROJECT_ROOT / "reports" / "ui"
GREAT_TRAIN_ROBBERY = "573a1390f29313caabcd42e8"
WAIT_SECONDS = 60
# WebGL in software (SwiftShader): the Nearby map (deck.gl) draws nothing without it.
WEBGL = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader")


@pytest.fixture(scope="module")
def service(settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = ui_service(settings, tmp_path_factory.mktemp("ui-browser"), f"ui-browser-{secrets.token_hex(4)}:")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def ui(service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    page = ui_server(service.target, metrics_url(service), tmp_path_factory.mktemp("streamlit")).start(60)
    yield page
    page.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing: run `make setup` (Debian's chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1350", *WEBGL):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            "selenium.webdriver.common.selenium_manager.SeleniumManager.binary_paths",
            lambda *_: pytest.fail("Selenium Manager was asked for a browser or a driver"),
        )
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def body(driver: webdriver.Chrome) -> str:
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:
        return ""


def wait_for_text(driver: webdriver.Chrome, *texts: str) -> str:
    try:
        WebDriverWait(driver, WAIT_SECONDS, 0.2).until(lambda d: all(t in body(d) for t in texts))
    except TimeoutException:
        driver.save_screenshot(str(SCREENSHOTS / "failed.png"))
        pytest.fail(f"the page never showed {texts}; it shows:\n{body(driver)[:3000]}")
    return body(driver)


def settled(driver: webdriver.Chrome) -> None:
    """Wait until Streamlit finished the run a click started (its "Running" widget is gone)."""
    time.sleep(0.3)
    WebDriverWait(driver, WAIT_SECONDS, 0.2).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
    )


def button(driver: webdriver.Chrome, label: str) -> WebElement:
    for element in driver.find_elements(By.XPATH, f'//button[.//p[normalize-space()="{label}"]]'):
        if element.is_displayed():
            return element
    pytest.fail(f"no button {label!r}")


def field(driver: webdriver.Chrome, label: str) -> WebElement:
    for element in driver.find_elements(By.CSS_SELECTOR, f'input[aria-label="{label}"]'):
        if element.is_displayed():
            return element
    pytest.fail(f"no input {label!r}")


def open_tab(driver: webdriver.Chrome, name: str) -> None:
    driver.find_element(By.XPATH, f'//*[@role="tab"][normalize-space()="{name}"]').click()
    settled(driver)


def table(driver: webdriver.Chrome, column: str) -> list[dict[str, str]]:
    """The rows of the shown table that has `column`, from the accessible table
    Streamlit's data grid keeps inside its canvas."""
    for grid in driver.find_elements(By.CSS_SELECTOR, 'table[role="grid"]'):
        header = [th.get_attribute("textContent") or "" for th in grid.find_elements(By.CSS_SELECTOR, "thead th")]
        if column in header:
            rows = grid.find_elements(By.CSS_SELECTOR, "tbody tr")
            cells = [
                [td.get_attribute("textContent") or "" for td in row.find_elements(By.CSS_SELECTOR, "td")]
                for row in rows
            ]
            return [dict(zip(header, row, strict=False)) for row in cells]
    pytest.fail(f"no table with a {column!r} column")


def click_row(driver: webdriver.Chrome, column: str, index: int) -> None:
    """Click the row-selection cell of row `index` of the table with `column`
    (the data grid is a canvas: rows are where its accessible table says)."""
    for grid in driver.find_elements(By.CSS_SELECTOR, 'table[role="grid"]'):
        header = [th.get_attribute("textContent") or "" for th in grid.find_elements(By.CSS_SELECTOR, "thead th")]
        if column in header:
            canvas = grid.find_element(By.XPATH, "..")
            rows = int(grid.get_attribute("aria-rowcount") or 1)  # the header included
            height = canvas.size["height"] / rows
            x = -canvas.size["width"] / 2 + 14
            y = -canvas.size["height"] / 2 + height * (index + 1.5)
            ActionChains(driver).move_to_element_with_offset(canvas, int(x), int(y)).click().perform()
            settled(driver)
            return
    pytest.fail(f"no table with a {column!r} column")


def shot(driver: webdriver.Chrome, name: str) -> None:
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_a_person_uses_every_part_of_the_page(browser, ui):
    browser.get(f"http://127.0.0.1:{ui.port}")
    wait_for_text(browser, "movieservice", "service: serving", "Look up")
    shot(browser, "01-loaded")

    # Look a movie up twice: a miss from MongoDB, then a hit from Redis.
    lookup = field(browser, "Movie id")
    lookup.send_keys(GREAT_TRAIN_ROBBERY, Keys.ENTER)
    settled(browser)
    button(browser, "Look up").click()
    text = wait_for_text(browser, "The Great Train Robbery (1903)", "x-cache:")
    assert "x-cache: miss" in text or "x-cache: hit" in text
    for _ in range(20):
        button(browser, "Look up").click()
        settled(browser)
        if "x-cache: hit" in body(browser).split("Lookups")[0]:
            break
    text = wait_for_text(browser, "x-cache: hit", "Edwin S. Porter", "Lookups")
    shot(browser, "02-lookup")

    # TopRated: a chart and a table, and the next page.
    open_tab(browser, "Top rated")
    wait_for_text(browser, "Page 1", "Open a movie")
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]')
    first = table(browser, "rank")
    assert [row["rank"] for row in first] == [str(rank) for rank in range(1, 11)]
    ratings = [float(row["IMDb rating"]) for row in first]
    assert all(0 < rating <= 10 for rating in ratings)
    # Click a movie (its row) to open it.
    click_row(browser, "rank", 2)
    wait_for_text(browser, f"{first[2]['title']} ({first[2]['year']})", "IMDb", "Tomatoes viewers")
    shot(browser, "03-top-rated")
    button(browser, "Next page").click()
    wait_for_text(browser, "Page 2")
    second = table(browser, "rank")
    assert [row["rank"] for row in second] == [str(rank) for rank in range(11, 21)]
    assert not {row["id"] for row in first} & {row["id"] for row in second}

    # Nearby: Minneapolis by default.
    open_tab(browser, "Nearby")
    button(browser, "Search").click()
    text = wait_for_text(browser, "theaters, nearest first")
    shown = int(text.split(" theaters, nearest first")[0].rsplit("\n", 1)[-1])
    theaters = table(browser, "km")
    distances = [float(row["km"]) for row in theaters]
    assert len(theaters) == shown and 1 <= shown <= 10
    assert distances == sorted(distances) and distances[-1] <= 10
    WebDriverWait(browser, WAIT_SECONDS, 0.2).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stDeckGlJsonChart"] canvas')
    )
    shot(browser, "04-nearby")

    # Upsert: the new movie at once in Get (a hit: written through) and in TopRated.
    open_tab(browser, "Upsert")
    title = f"Browser Test {secrets.token_hex(3)}"
    field(browser, "Write token").send_keys(UI_TOKEN)
    field(browser, "Title").send_keys(title)
    button(browser, "Upsert").click()
    text = wait_for_text(browser, f"Created {title}", "TopRated all genres: #", f"{title} (2024)")
    assert "x-cache: hit" in text.split("Get, right after")[1]
    shot(browser, "05-upsert")

    # An invalid write shows its problem beside the field.
    year = field(browser, "Year")
    year.send_keys(Keys.CONTROL, "a")
    year.send_keys("3000")
    button(browser, "Upsert").click()
    wait_for_text(browser, "Invalid input", "must be 0 (unknown) or between 1870 and 2100")
    shot(browser, "06-invalid")

    # The live panel.
    open_tab(browser, "Live")
    text = wait_for_text(browser, "Requests/s", "Get cache hit ratio", "p99")
    shot(browser, "07-live")
    assert "Traceback" not in text

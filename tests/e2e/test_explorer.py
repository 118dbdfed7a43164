"""The explorer page in a real headless Chromium: what a person sees, and hostile titles shown as plain text."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from services.settings import Settings
from tests.e2e.conftest import ALICE, PWNED_IMG, PWNED_SCRIPT, serving

pytestmark = pytest.mark.browser
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Debian's Chromium driven by its chromedriver, with a throw-away profile."""
    with tempfile.TemporaryDirectory(prefix="r2ec-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            yield driver
        finally:
            driver.quit()


def wait_for_user(driver: webdriver.Chrome, user_id: str) -> None:
    WebDriverWait(driver, 15).until(
        lambda d: d.find_element(By.ID, "user").is_displayed() and d.find_element(By.ID, "user-id").text == user_id
    )


def screenshot(base_url: str, user_id: str, path: Path, token: str | None = None) -> Path:
    """Open the explorer on one user (``?user=``) and save what a person sees as a PNG."""
    with chromium() as driver:
        driver.get(base_url)
        if token:
            driver.execute_script("sessionStorage.setItem('r2ec-token', arguments[0])", token)
        driver.get(f"{base_url}/?user={user_id}")
        wait_for_user(driver, user_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(path)), f"chromium could not write {path}"
    return path


def test_a_person_picks_a_user_and_reads_the_recommendations(api_url: str, tmp_path: Path) -> None:
    with chromium() as driver:
        driver.get(api_url)
        wait = WebDriverWait(driver, 15)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#users button")) == 3)
        assert "run-new" in driver.find_element(By.ID, "run").text
        driver.find_element(By.ID, "search").send_keys("ali")
        wait.until(lambda d: [b.text for b in d.find_elements(By.CSS_SELECTOR, "#users button")] == ["alice"])
        driver.find_element(By.CSS_SELECTOR, "#users button").click()
        wait_for_user(driver, "alice")

        assert driver.find_element(By.ID, "rationale").text == ALICE.rationale
        assert [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#history li")] == [
            h["title"] for h in ALICE.history
        ]
        rows = [
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, "#items tr")
        ]
        assert rows == [[str(i.rank), i.title, i.item_id, f"{i.score:.3f}"] for i in ALICE.items]
        assert PWNED_IMG in (rows[1][1], rows[2][1]) and PWNED_SCRIPT in (rows[1][1], rows[2][1])
        assert driver.find_elements(By.CSS_SELECTOR, "main img, main script, #rationale b") == []
        made_by = driver.find_element(By.ID, "made-by").text
        assert "run run-new" in made_by and "r2ec v7" in made_by
        assert driver.title == "r2ec explorer"  # the onerror and the script never ran

        driver.find_element(By.ID, "search").clear()
        driver.find_element(By.ID, "search").send_keys("bob")
        wait.until(lambda d: [b.text for b in d.find_elements(By.CSS_SELECTOR, "#users button")] == ["bob"])
        driver.find_element(By.CSS_SELECTOR, "#users button").click()
        wait_for_user(driver, "bob")
        assert driver.find_element(By.ID, "status").text == "no_history"
        assert driver.find_elements(By.CSS_SELECTOR, "#items tr") == []

    png = screenshot(api_url, "alice", tmp_path / "explorer.png")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_the_page_asks_for_the_token_when_the_api_wants_one(settings: Settings) -> None:
    with serving(settings.model_copy(update={"api_token": SecretStr("s3cret")})) as url, chromium() as driver:
        driver.get(url)
        wait = WebDriverWait(driver, 15)
        wait.until(lambda d: d.find_element(By.ID, "login").is_displayed())
        assert driver.find_elements(By.CSS_SELECTOR, "#users button") == []
        driver.find_element(By.ID, "token").send_keys("s3cret", Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#users button")) == 3)
        assert not driver.find_element(By.ID, "login").is_displayed()
        assert "run-new" in driver.find_element(By.ID, "run").text

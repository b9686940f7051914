"""The operator page in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``).

Against a real ``assetq serve``, Redis and worker: the page loads behind its sign-in, a running
batch's progress moves on the page without a reload, skipped assets are grouped by
``error.kind``, and the replay button replays a dead-lettered chunk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from contract.payload import ChunkPayload
from tests.api_fixtures import FACES, OCR, TOKEN, ApiStack, api_stack  # noqa: F401
from tools.testbed.services import wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Set to a file path to keep a screenshot of the batch page (the README's is made this way).
SCREENSHOT_ENV = "ASSETQ_UI_SCREENSHOT"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    assert shutil.which("chromium") and Path(CHROMEDRIVER).exists(), "apt-get install chromium chromium-driver"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must not look for drivers on the network

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def sign_in(d: WebDriver, stack: ApiStack) -> None:
    d.get(f"{stack.url}/ui")
    if "Live workers" in d.page_source:
        return  # signed in already: the cookie lasts
    box = d.find_element(By.NAME, "token")
    box.send_keys(TOKEN)
    box.submit()
    wait_for(lambda: "Live workers" in d.page_source, 20, "the page after signing in")


def test_the_page_shows_a_running_batch_moving_and_the_workers(browser: WebDriver, api_stack: ApiStack) -> None:  # noqa: F811
    d = browser
    d.delete_all_cookies()
    d.get(f"{api_stack.url}/ui")
    assert "Sign in" in d.page_source  # nothing shown without the token
    sign_in(d, api_stack)
    assert api_stack.worker.name in d.find_element(By.CSS_SELECTOR, "tr.worker").text
    bulk = sorted((api_stack.photos / "bulk").iterdir())[:48]
    spec = {"assets": [{"id": f.stem, "uri": f.as_uri()} for f in bulk], "tasks": {**FACES, **OCR}}
    with api_stack.client() as c:
        batch_id = c.post("/v1/batches", json=spec).json()["batch_id"]
    d.get(f"{api_stack.url}/ui")
    d.execute_script("window.notReloaded = true")
    selector = f'.progress[data-batch="{batch_id}"]'

    def pending() -> int:
        return int(d.find_element(By.CSS_SELECTOR, selector).get_attribute("data-pending") or -1)

    first = pending()
    wait_for(lambda: 0 < pending() < first, 120, "the batch's progress to move on the page")
    wait_for(lambda: pending() == 0, 240, "the batch to finish on the page")
    assert d.execute_script("return window.notReloaded === true")
    bar = d.find_element(By.CSS_SELECTOR, f"{selector} .bar span.ok")
    assert (bar.get_attribute("style") or "").startswith("width: 100")


def test_skips_by_kind_and_the_replay_button_replays_a_dead_lettered_chunk(
    browser: WebDriver,
    api_stack: ApiStack,  # noqa: F811
) -> None:
    from worker.tasks.deadletter import dead_letter_chunk

    photos = api_stack.photos
    p = api_stack.producer()
    assets = [
        {"id": "ok-1", "uri": (photos / "astronaut.jpg").as_uri()},
        {"id": "dead-1", "uri": (photos / "chelsea.jpg").as_uri()},
        {"id": "broken-1", "uri": (photos / "truncated.jpg").as_uri()},
        {"id": "gone-1", "uri": (photos / "no-such-photo.jpg").as_uri()},
        {"id": "gone-2", "uri": (photos / "nor-this-one.jpg").as_uri()},
    ]
    batch_id = p.submit({"assets": assets, "tasks": FACES}, queue="nobody-consumes")
    tasks = p.store.batch_meta(batch_id)["tasks"]
    # Four assets run; one chunk is dead-lettered as a worker does after its retries.
    for n, asset in enumerate(a for a in assets if a["id"] != "dead-1"):
        p.send_chunk(batch_id, f"{batch_id}-run{n}", [asset], tasks, {})
    dead_letter_chunk(p.store, ChunkPayload(batch_id, f"{batch_id}-dl", [assets[1]], tasks), "transient", "S3 down", 6)
    api_stack.wait_complete(batch_id)

    d = browser
    sign_in(d, api_stack)
    d.get(f"{api_stack.url}/ui/batches/{batch_id}")
    kinds = {e.get_attribute("data-kind"): e.text for e in d.find_elements(By.CSS_SELECTOR, "tr.skip-kind")}
    assert set(kinds) == {"truncated", "not_found"}
    assert "gone-1" in kinds["not_found"] and "gone-2" in kinds["not_found"] and "broken-1" in kinds["truncated"]
    row = d.find_element(By.CSS_SELECTOR, "tr.dead-letter")
    assert "S3 down" in row.text and "dead-1" in row.text
    if os.environ.get(SCREENSHOT_ENV):
        d.save_screenshot(os.environ[SCREENSHOT_ENV])

    row.find_element(By.CSS_SELECTOR, "button.replay").click()
    wait_for(lambda: "Re-enqueued 1 asset(s)" in d.page_source, 20, "the replay's confirmation")
    progress = f'.progress[data-batch="{batch_id}"]'
    wait_for(
        lambda: d.find_element(By.CSS_SELECTOR, progress).get_attribute("data-ok") == "2",
        120,
        "the replayed asset to turn ok on the page",
    )
    st = p.status(batch_id)
    assert (st["ok"], st["failed"], st["dead_letters"]) == (2, 0, 0)
    d.get(f"{api_stack.url}/ui/batches/{batch_id}")
    assert "No dead letters." in d.page_source

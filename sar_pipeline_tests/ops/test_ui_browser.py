"""The UI as users meet it, in a real browser: the webserver on 127.0.0.1 over the deployment the
``deployment`` fixture materialised (a flight and a dataset version, in Postgres), opened in headless
Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium; no browser download)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from sar_pipeline_tests.services import dagster_process, free_port, http_ok, venv_tool

SCREENSHOTS = Path(os.environ.get("SAR_PIPELINE_SCREENSHOTS", tempfile.gettempdir())) / "sar-pipeline-ui"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)


@contextlib.contextmanager
def chromium():
    """Headless Chromium through chromedriver, with a fresh profile folder removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromium-driver (Debian packages) are needed: scripts/test installs them")
    profile = tempfile.mkdtemp(prefix="sar-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait_for_text(browser, texts: list[str], timeout_s: float = 60) -> str:
    """The page's HTML once every one of ``texts`` is in it; else fail, keeping a screenshot."""
    deadline = time.monotonic() + timeout_s
    source = ""
    while time.monotonic() < deadline:
        source = browser.page_source
        if all(t in source for t in texts):
            return source
        time.sleep(0.5)
    browser.save_screenshot(str(SCREENSHOTS / "failed.png"))
    missing = [t for t in texts if t not in source]
    raise AssertionError(f"{browser.current_url}: {missing} not on the page after {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def webserver(deployment):
    port = free_port()
    args = [
        venv_tool("dagster-webserver"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(deployment.workspace),
    ]
    with dagster_process(args, deployment.env, deployment.root / "webserver.log", deployment.root, port=port):
        deadline = time.monotonic() + 60
        while not http_ok(f"http://127.0.0.1:{port}/server_info") and time.monotonic() < deadline:
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"


def test_lineage_and_an_asset_page_with_its_picture_in_chromium(webserver, deployment):
    from selenium.webdriver.common.by import By

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    flight = deployment.flight_id
    with chromium() as browser:
        # lineage: everything upstream of the dataset, with its checks and the run's partitions
        browser.get(f"{webserver}/assets/training_dataset?view=lineage&lineageScope=upstream&lineageDepth=4")
        _wait_for_text(browser, ["sar_scenes", "sar_tiles", "optical_tiles", "captions", "training_dataset"])
        time.sleep(2)  # let the graph lay out before the picture
        browser.save_screenshot(str(SCREENSHOTS / "lineage.png"))

        # the dataset's page: its description keeps the placeholders markdown would eat
        browser.get(f"{webserver}/assets/training_dataset")
        _wait_for_text(browser, ["dataset/&lt;version&gt;/manifest.json", "dataset_version"])

        # a flight's scenes: metadata, and the quick-look picture behind [Show Markdown]
        browser.get(f"{webserver}/assets/sar_scenes?partition={flight}")
        _wait_for_text(browser, [flight, "scene_count", "footprint_area_km2", "quicklook"])
        row = browser.find_element(By.XPATH, "//tr[td[contains(., 'quicklook')]]")
        link = row.find_element(By.XPATH, ".//*[contains(text(), 'Show Markdown')]")
        browser.execute_script("arguments[0].scrollIntoView();", link)
        link.click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            images = browser.find_elements(By.XPATH, "//img[starts-with(@src, 'data:image/')]")
            drawn = [i for i in images if browser.execute_script("return arguments[0].naturalWidth", i) > 0]
            if drawn:
                break
            time.sleep(0.5)
        browser.save_screenshot(str(SCREENSHOTS / "sar_scenes.png"))
        assert drawn, "the quick-look picture is not on the page"
        assert f"scenes of {flight}" in drawn[0].get_attribute("alt")
    assert (SCREENSHOTS / "lineage.png").stat().st_size > 10_000

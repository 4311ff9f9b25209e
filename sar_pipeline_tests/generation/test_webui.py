"""The generation web page end to end: ``sar-pipeline serve`` in its own process, driven by Debian's
headless Chromium through Selenium and Debian's chromedriver (no browser download, no network)."""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sar-pipeline serve exited: {process.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError("sar-pipeline serve did not listen in time")


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed: apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.slow
def test_web_page_generates_from_a_typed_prompt(gen_world, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sar_pipeline.cli", "serve", "--port", str(port)]
    command += ["--model", str(gen_world["pipeline"]), "--controlnet", str(gen_world["controlnet"])]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(port, server)
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 120)
        prompt = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#prompt textarea")))
        prompt.clear()
        prompt.send_keys("a lake beside fields")
        seed = browser.find_element(By.CSS_SELECTOR, "#seed input")
        seed.clear()
        seed.send_keys("3")
        browser.find_element(By.ID, "generate").click()
        image = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#output img")))
        wait.until(lambda _: "a lake beside fields" in browser.find_element(By.ID, "provenance").text)
        provenance = browser.find_element(By.ID, "provenance").text
        source = image.get_attribute("src")
        with urllib.request.urlopen(source, timeout=30) as response:
            returned = np.asarray(Image.open(io.BytesIO(response.read())).convert("L"))
        screenshot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L")
        screenshot.save(tmp_path / "page.png")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine may still be inside a denoising step
            server.kill()
            server.wait()
    assert returned.shape == (64, 64) and returned.std() > 0  # the model's tile, not a blank
    assert '"seed": 3' in provenance and "An aerial view, a lake beside fields" in provenance
    assert str(gen_world["pipeline"]) in provenance
    # the page rendered (text, controls, the image), not an empty or error page
    page = np.asarray(screenshot)
    assert page.shape[1] == 1280 and page.std() > 10

"""The web page at ``/`` in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium): choose an image, see it drawn with its boxes and one table row per detection of the /v1 answer.

A missing browser or driver fails the test (CI installs both); it never skips."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest
from _serve_server import Server, sample_images, tiny_model

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
)


def _browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("the web-page test needs Debian's chromium and chromium-driver: apt-get install chromium "
                    "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=900,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_page_uploads_an_image_and_shows_its_boxes_and_rows(tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    model = tiny_model(tmp_path / "tiny.onnx")
    image = sample_images(tmp_path, 2)[1]
    server = Server("--model", str(model))
    browser = None
    try:
        request = urllib.request.Request(f"{server.url}/v1/models/tiny/detect?score_threshold=0.3",
                                         data=image.read_bytes(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            want = json.loads(response.read())["detections"]
        assert want
        browser = _browser(tmp_path / "profile")
        browser.set_page_load_timeout(60)
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#model option"))
        browser.find_element(By.ID, "score").send_keys("0.3")
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#status.done")))
        rows = browser.find_elements(By.CSS_SELECTOR, "#rows tr.detection")
        assert len(rows) == len(want)
        cells = [row.find_elements(By.TAG_NAME, "td") for row in rows]
        assert [c[1].text for c in cells] == [d["class_name"] for d in want]
        assert [c[2].text for c in cells] == [f"{d['score']:.3f}" for d in want]
        size = browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
        assert size == [100 - 9, 60 + 17]  # the image itself, boxes drawn in its pixels
        # the first box is stroked in its class's colour (the page's palette), 2 px wide: some pixels have it exactly
        palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]
        color = [int(palette[want[0]["class_id"] % 8][i : i + 2], 16) for i in (1, 3, 5)]
        drawn = browser.execute_script(
            "const [r, g, b] = arguments[0]; const c = document.getElementById('canvas');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 0; i < d.length; i += 4) { if (d[i] === r && d[i+1] === g && d[i+2] === b) n++; }"
            "return n;", color)
        assert drawn > 0
        browser.save_screenshot(str(tmp_path / "serve-page.png"))
    finally:
        if browser is not None:
            browser.quit()
        server.stop()

"""`medm2g serve` end to end: the real command on a tiny run, driven in headless Chromium.

Needs Chromium and its driver (Debian: ``apt-get install chromium chromium-driver``; ``.ci/run``
installs them) and selenium (the ``test`` extra). Without them the test is skipped, unless
``MEDM2G_BROWSER_TEST=required`` (as ``.ci/run`` sets), when their absence fails it.

``MEDM2G_BROWSER_TEST_RUN=FOLDER`` serves another run (say a demo's) instead of the tiny one, and
``MEDM2G_SCREENSHOTS=FOLDER`` also copies the screenshots there: that is how ``docs/serve.png``
is taken.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

REPORT = ("Findings: There is a 30 mm haemorrhage in the right frontal lobe. No midline shift. "
          "Impression: Right frontal acute haemorrhage.")
WAIT = 180  # seconds for the server to start and for one generation: a 2-core CI machine, loaded


def _browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; skips (or fails, where required) without them."""
    chromium = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    missing = [what for what, found in (("chromium", chromium), ("chromedriver (Debian: chromium-driver)", driver))
               if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        message = f"the browser test needs {', '.join(missing)}"
        if os.environ.get("MEDM2G_BROWSER_TEST") == "required":
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_trained_run, tmp_path_factory):
    """``medm2g serve RUN`` in a subprocess, as a person starts it; yields its URL."""
    _browser()
    run = Path(os.environ.get("MEDM2G_BROWSER_TEST_RUN") or tiny_trained_run)
    folder = tmp_path_factory.mktemp("served")
    port = _free_port()
    log = (folder / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "medm2g.core.apps.cli", "serve", str(run), "--port", str(port),
                               "--work", str(folder / "work"), "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + WAIT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"medm2g serve did not come up on {url}:\n{(folder / 'serve.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1500"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    yield chrome
    chrome.quit()


def _screenshot(browser, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    browser.save_screenshot(str(path))
    if os.environ.get("MEDM2G_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["MEDM2G_SCREENSHOTS"]) / name)
    return path


def _downloaded(folder: Path, name: str) -> Path:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [p for p in folder.glob(f"{Path(name).stem}*{Path(name).suffix}") if p.stat().st_size > 0]
        if found and not list(folder.glob("*.crdownload")):
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{name} was not downloaded into {folder}: {sorted(p.name for p in folder.glob('*'))}")


def _tab(browser, title: str):
    """The visible tab button titled ``title`` (Gradio also keeps hidden copies for narrow screens)."""
    from selenium.webdriver.common.by import By

    buttons = browser.find_elements(By.XPATH, f"//button[normalize-space(.)='{title}']")
    return next(button for button in buttons if button.is_displayed())


def test_a_report_becomes_a_ct_whose_dicom_downloads_and_a_broken_file_is_refused(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    browser.get(served)
    # 1. type a report and generate a CT (the page's default output)
    report = wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "#report-text textarea")))
    report.send_keys(REPORT)
    ct = browser.find_element(By.XPATH, "//*[@id='report-outputs']//label[normalize-space(.)='ct']//input")
    assert ct.is_selected()
    browser.find_element(By.ID, "report-generate").click()
    image = wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#report-images img"))[0]
    wait.until(lambda page: page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 256
    status = browser.find_element(By.ID, "report-status").text
    assert status.startswith("Generated with medm2g: 1 image(s)") and "synthetic" in status
    shot = _screenshot(browser, tmp_path, "serve.png")
    assert shot.stat().st_size > 10_000
    # 2. download the DICOM: it reads back with its synthetic marker
    link = wait.until(lambda page: [a for a in page.find_elements(By.CSS_SELECTOR, "#report-downloads a")
                                    if (a.get_attribute("href") or "").endswith("ct.dcm")])[0]
    browser.execute_script("arguments[0].scrollIntoView()", link)
    link.click()
    dicom = pydicom.dcmread(_downloaded(tmp_path / "downloads", "ct.dcm"))
    assert dicom.ConversionType == "SYN" and dicom.ImageType[0] == "DERIVED"
    assert "Synthetic image generated by medm2g" in dicom.DerivationDescription and dicom.Modality == "CT"
    # 3. upload a broken file: the page says what is wrong with it, and keeps serving
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a scan" * 40)
    _tab(browser, "Image to anything").click()
    upload = wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#image-upload input[type=file]"))[0]
    upload.send_keys(str(broken))
    wait.until(lambda page: "broken.dcm" in page.find_element(By.ID, "image-read-status").text)
    message = browser.find_element(By.ID, "image-read-status").text
    assert message.startswith("Not done: broken.dcm: not a DICOM file"), message
    _screenshot(browser, tmp_path, "serve-refused.png")
    _tab(browser, "The run").click()
    wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#run-tables"))

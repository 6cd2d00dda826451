"""A real browser on the web app, for the browser tests and ``scripts/web_benchmark.py``.

Debian's headless Chromium driven by selenium, with the waits a check needs (never a fixed sleep
for a result) and the pixel measures the tests use on the streamed views.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from AnomalyDetectionWeb.session import EXPORT_SUFFIXES

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_line(process: subprocess.Popen, prefix: str, timeout: float) -> str:
    """The first line of ``process``'s stdout that starts with ``prefix`` (its other lines are skipped)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the process ended before printing {prefix!r} (exit {process.poll()})")
        if line.startswith(prefix):
            return line.strip()
    raise TimeoutError(f"no {prefix!r} within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


class Page:
    """One browser window on the app, with the waits a test needs (never a fixed sleep for a result)."""

    def __init__(self, url: str, downloads: Path) -> None:
        options = webdriver.ChromeOptions()
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(argument)
        self.profile = tempfile.mkdtemp(prefix="ad-chromium-")
        options.add_argument(f"--user-data-dir={self.profile}")
        options.binary_location = str(CHROMIUM)
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
        self.downloads = downloads
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                    {"behavior": "allow", "downloadPath": str(downloads)})
        self.driver.get(url)
        self.wait(lambda: self.state("models") is not None, 60, "the page to connect")

    def close(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    @property
    def url(self) -> str:
        return self.driver.current_url

    def state(self, key: str):
        """A value of the page's trame state, as the browser holds it."""
        return self.driver.execute_script(
            f"return (window.trame && trame.state) ? trame.state.get({json.dumps(key)}) : null")

    def wait(self, condition: Callable[[], object], timeout: float = 30, what: str = "the page"):
        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(
            lambda _: condition(), message=f"waited {timeout} s for {what}")

    def element(self, test_id: str):
        return self.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{test_id}"]')

    def click(self, test_id: str) -> None:
        self.wait(lambda: self.element(test_id).is_enabled(), 30, f"{test_id} to be enabled")
        self.element(test_id).click()

    def text(self, test_id: str) -> str:
        return self.element(test_id).text.strip()

    def segment_voxels(self) -> int:
        return int(self.text("segment-voxels"))

    def view(self, index: int) -> Image.Image:
        """What the index-th view of the layout shows (0: axial, 1: coronal, 2: sagittal, 3: 3D)."""
        views = self.driver.find_elements(By.CSS_SELECTOR, ".layout-grid-item")
        return Image.open(io.BytesIO(views[index].screenshot_as_png)).convert("RGB")

    def view_element(self, index: int):
        return self.driver.find_elements(By.CSS_SELECTOR, ".layout-grid-item img.image-display-area")[index]

    def upload(self, test_id: str, path: Path) -> None:
        self.element(test_id).find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))

    def screenshot(self, name: str) -> None:
        folder = os.environ.get("AD_WEB_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(folder) / f"web_{name}.png"))

    def download(self, what: str) -> sitk.Image:
        """Click a download button; the file the browser saved, read back."""
        for old in self.downloads.glob("*"):
            old.unlink()
        self.click(f"download-{what}")
        suffix = "_" + EXPORT_SUFFIXES[what]
        path = self.wait(lambda: next((p for p in self.downloads.glob(f"*{suffix}")
                                       if p.stat().st_size > 0 and not p.name.endswith(".crdownload")), None),
                         60, f"the {what} download")
        time.sleep(0.5)  # the browser renames the file when it has written it all
        return sitk.ReadImage(str(path))


def heat_pixels(image: Image.Image) -> int:
    """Pixels in the heat map's colours (Inferno: red, orange, yellow), which a grey scan never has."""
    rgb = np.asarray(image).astype(int)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(np.count_nonzero((red > 120) & (red - blue > 80) & (red >= green)))


def brain_pixels(image: Image.Image) -> float:
    """Share of a view's pixels that are not black: the scan is on screen."""
    return float(np.mean(np.asarray(image).sum(axis=2) > 60))



"""The teaching web app in a real browser: headless Chromium (Debian's) driven by selenium.

A server process of the app (``python -m AnomalyDetectionWeb.server``) runs the bundled default
model on the CPU; the tests click what a student clicks and check what the page shows against
what the engine computes for the same input (``anomaly-detection detect`` into a folder). The
tests of this module run in order on one page: load, detect, threshold, edit, evaluate, cancel,
bad uploads; the launcher's test starts a class of two.

``AD_WEB_SCREENSHOTS=DIR`` keeps a screenshot of each step in DIR (the README's pictures).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest
import SimpleITK as sitk

from AnomalyDetectionLib.catalog import SAMPLE_NAME, SCORE_HELP, sample_paths

if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/install_browser.sh installs them "
                "as root)", allow_module_level=True)
pytest.importorskip("trame_slicer", reason="the web extra is not installed (pip install .[web])")
pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from web_page import Page, brain_pixels, free_port, heat_pixels, stop, wait_for_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Seconds the CPU may take for a detection of the sample (about 8 s alone on a 2-core machine).
DETECT_TIMEOUT_S = 240
UPLOAD_LIMIT_MB = 8


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def engine_outputs(tmp_path_factory) -> Path:
    """``anomaly-detection detect`` on the sample with the default model: what the page must match."""
    folder = tmp_path_factory.mktemp("detect")
    scan, _ = sample_paths()
    subprocess.run([sys.executable, "-m", "AnomalyDetectionLib.cli", "detect", str(scan), "--output-dir",
                    str(folder), "--device", "cpu", "--quiet"], check=True, cwd=ROOT)
    return folder


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "AnomalyDetectionWeb.server", "--port", str(port),
                                "--device", "cpu", "--idle-timeout", "900", "--max-upload-mb", str(UPLOAD_LIMIT_MB)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        wait_for_line(process, "READY", 120)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def page(server, tmp_path_factory) -> Iterator[Page]:
    page = Page(server, tmp_path_factory.mktemp("downloads"))
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def detected(page) -> Page:
    """The page after Load sample and Detect anomalies (the first tests check these steps)."""
    if not page.state("scan_name"):
        page.click("load-sample")
        page.wait(lambda: page.state("scan_name") == SAMPLE_NAME, 60, "the sample")
    if not page.state("has_result"):
        page.click("detect")
        page.wait(lambda: page.state("has_result") and not page.state("busy"), DETECT_TIMEOUT_S, "the detection")
    return page


# ---------------------------------------------------------------------------------------------- tests


def test_1_the_sample_loads_and_the_views_show_the_brain(page):
    page.click("load-sample")
    page.wait(lambda: page.state("scan_name") == SAMPLE_NAME, 60, "the sample")
    assert page.state("has_truth") is True
    for index in range(3):  # axial, coronal, sagittal
        page.wait(lambda i=index: brain_pixels(page.view(i)) > 0.15, 30, f"view {index} to show the scan")
    assert heat_pixels(page.view(0)) < 2000  # only the truth's outline is coloured before a detection
    page.screenshot("1_sample")


def test_2_detect_shows_the_heat_map_and_the_engines_mask(page, engine_outputs):
    before = heat_pixels(page.view(0))
    page.click("detect")
    page.wait(lambda: page.state("busy"), 30, "the detection to start")
    assert page.element("progress").is_displayed()
    page.wait(lambda: page.state("has_result") and not page.state("busy"), DETECT_TIMEOUT_S, "the detection")
    assert not page.state("error")
    page.wait(lambda: heat_pixels(page.view(0)) > before + 3000, 30, "the heat map in the axial view")
    mask = sitk.ReadImage(str(engine_outputs / f"{SAMPLE_NAME}_mask.nii.gz"))
    assert page.segment_voxels() == int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    downloaded = page.download("mask")
    assert np.array_equal(sitk.GetArrayFromImage(downloaded), sitk.GetArrayFromImage(mask))
    assert "normal calibration scans" in page.text("sample-answer")
    page.screenshot("2_detected")


def test_3_the_threshold_slider_reapplies_the_mask_rule_and_never_marks_background(detected, engine_outputs):
    page = detected
    calibrated = page.segment_voxels()
    thumb = page.element("threshold").find_element(By.CSS_SELECTOR, ".v-slider-thumb")
    thumb.click()
    thumb.send_keys(Keys.HOME)  # the lowest threshold: every foreground voxel the rule keeps
    page.wait(lambda: page.segment_voxels() > 10 * calibrated, 60, "the segment to grow")
    segment = sitk.GetArrayFromImage(page.download("segmentation")) > 0
    foreground = sitk.GetArrayFromImage(sitk.ReadImage(str(engine_outputs / f"{SAMPLE_NAME}_foreground.nii.gz"))) > 0
    assert segment.sum() == page.segment_voxels()
    assert not np.any(segment & ~foreground), "the slider marked voxels outside the scored foreground"
    page.screenshot("3_threshold_lowest")
    page.click("reset-threshold")
    page.wait(lambda: page.segment_voxels() == calibrated, 60, "the calibrated segment back")


def stroke(page, effect: str) -> None:
    """Activate ``effect`` and drag the mouse across the axial view, as a student paints."""
    page.click(f"effect-{effect.lower()}")
    page.wait(lambda: page.state("effect") == effect, 10, f"the {effect} effect")
    view = page.view_element(0)
    width, height = view.size["width"], view.size["height"]
    drag = ActionChains(page.driver)
    drag.move_to_element_with_offset(view, -width // 8, height // 8).click_and_hold()
    for _ in range(5):
        drag.move_by_offset(width // 40, 0)
    drag.release().perform()


def test_4_a_paint_stroke_changes_the_segment_and_undo_restores_it(detected):
    page = detected
    before = page.segment_voxels()
    stroke(page, "Paint")
    page.wait(lambda: page.segment_voxels() > before, 30, "the painted voxels")
    assert page.state("can_undo") is True
    page.screenshot("4_painted")
    page.click("undo")
    page.wait(lambda: page.segment_voxels() == before, 30, "undo to restore the segment")
    page.click("effect-none")


def test_4b_erase_and_islands_edit_the_segment_and_undo_steps_back(detected):
    page = detected
    before = page.segment_voxels()
    stroke(page, "Paint")
    page.wait(lambda: page.segment_voxels() > before, 30, "the painted voxels")
    painted = page.segment_voxels()
    stroke(page, "Erase")  # the same path: the painted voxels go again
    page.wait(lambda: page.segment_voxels() < painted, 30, "the erased voxels")
    erased = page.segment_voxels()
    page.click("effect-islands")
    page.wait(lambda: page.state("effect") == "Islands", 10, "the Islands effect")
    page.click("keep-largest")
    page.wait(lambda: page.segment_voxels() < erased, 30, "the smaller islands removed")
    for expected in (erased, painted, before):
        page.click("undo")
        page.wait(lambda e=expected: page.segment_voxels() == e, 30, f"undo back to {expected} voxels")
    page.click("effect-none")


def test_5_evaluate_shows_the_dice_the_engine_computes(detected, engine_outputs):
    from AnomalyDetectionLib.evaluation import evaluate_case

    page = detected
    page.click("evaluate")
    page.wait(lambda: page.state("metrics"), 60, "the metrics table")
    shown = {row["metric"]: row["value"] for row in page.state("metrics")}
    threshold = page.state("calibrated_threshold")
    _, truth_path = sample_paths()
    case = evaluate_case(sitk.ReadImage(str(engine_outputs / f"{SAMPLE_NAME}_anomaly.nii.gz")),
                         sitk.ReadImage(str(truth_path)),
                         mask=sitk.ReadImage(str(engine_outputs / f"{SAMPLE_NAME}_foreground.nii.gz")),
                         threshold=threshold)
    dice_row = next(name for name in shown if name.startswith("Dice at threshold"))
    assert float(shown[dice_row]) == pytest.approx(case["dice"], abs=5e-4)
    assert float(shown["Voxel AUROC"]) == pytest.approx(case["voxel_auroc"], abs=5e-4)
    cell = page.driver.find_element(By.CSS_SELECTOR, f'[data-metric="{dice_row}"]')
    assert cell.text.strip() == shown[dice_row]
    assert page.element("dice-plot").get_attribute("src").startswith("data:image/png")
    page.screenshot("5_evaluated")


def test_5b_an_uploaded_reference_segmentation_evaluates_like_the_samples_truth(detected):
    page = detected
    page.click("evaluate")
    page.wait(lambda: page.state("metrics"), 60, "the metrics table")
    before = {row["metric"]: row["value"] for row in page.state("metrics")}
    _, truth_path = sample_paths()
    page.upload("upload-truth", truth_path)
    page.wait(lambda: "loaded" in (page.state("info") or ""), 60, "the reference segmentation")
    page.driver.execute_script("trame.state.set('metrics', [])")
    page.click("evaluate")
    page.wait(lambda: page.state("metrics"), 60, "the metrics table")
    assert {row["metric"]: row["value"] for row in page.state("metrics")} == before


def test_6_cancel_during_detection_leaves_the_previous_scene(detected):
    page = detected
    voxels, map_pixels = page.segment_voxels(), heat_pixels(page.view(0))
    page.click("detect")
    page.wait(lambda: (page.state("progress") or 0) > 0, 60, "the detection to make progress")
    page.click("cancel")
    page.wait(lambda: not page.state("busy"), 60, "the detection to stop")
    assert "cancelled" in page.state("info")
    assert page.state("has_result") is True and not page.state("error")
    assert page.segment_voxels() == voxels
    assert heat_pixels(page.view(0)) > map_pixels // 2  # the map is still shown


@pytest.mark.parametrize("name, make, message", [
    ("notes.nii.gz", lambda path: path.write_text("not an image"), "cannot be read"),
    ("fourd.nii.gz", lambda path: sitk.WriteImage(sitk.Image([6, 6, 6, 3], sitk.sitkFloat32), str(path)), "4D"),
    ("huge.nrrd", lambda path: path.write_bytes(b"\0" * int((UPLOAD_LIMIT_MB + 1) * 1e6)), "upload limit"),
])
def test_7_a_bad_upload_shows_the_engines_error_and_keeps_the_scene(detected, tmp_path, name, make, message):
    page = detected
    voxels = page.segment_voxels()
    path = tmp_path / name
    make(path)
    page.upload("upload-scan", path)
    page.wait(lambda: message in (page.state("error") or ""), 60, "the error")
    assert message in page.text("error") and str(tmp_path) not in page.text("error")
    assert page.text("error").startswith(name)  # the student's file name, not the server's copy
    assert page.state("scan_name") == SAMPLE_NAME and page.state("has_result") is True
    assert page.segment_voxels() == voxels
    if name.startswith("fourd"):
        page.screenshot("7_bad_upload")


def test_8_teaching_mode_shows_every_score_beside_the_reconstruction(detected):
    page = detected
    page.click("teach")
    page.wait(lambda: page.state("teaching") and not page.state("busy"), 3 * DETECT_TIMEOUT_S, "teaching mode")
    panels = [panel["name"] for panel in page.state("teaching_panels")]
    assert panels[0] == "model's reconstruction" and set(page.state("scores")) <= set(panels)
    legend = page.text("teaching-legend")
    # each score's panel is explained with the paper its help names (the default model's scores)
    paper = r"[A-Z][a-z]+ et al\. \d{4}"
    cited = {name for score in page.state("scores") for name in re.findall(paper, SCORE_HELP[score])}
    assert cited and all(name in legend for name in cited), (cited, legend)
    views = page.driver.find_elements(By.CSS_SELECTOR, ".layout-grid-item")
    assert len(views) == len(panels)
    page.wait(lambda: all(brain_pixels(page.view(i)) > 0.1 for i in range(len(panels))), 30, "every panel")
    page.screenshot("8_teaching")
    page.click("show-views")


def test_the_launcher_gives_each_student_a_session_of_their_own(tmp_path):
    port = free_port()
    launcher = subprocess.Popen([sys.executable, "-m", "AnomalyDetectionLib.cli", "web", "--port", str(port),
                                 "--device", "cpu", "--max-sessions", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    pages: List[Page] = []
    try:
        assert f"http://127.0.0.1:{port}/" in wait_for_line(launcher, "AnomalyDetection web app", 60)
        for student in ("a", "b"):
            pages.append(Page(f"http://127.0.0.1:{port}/", tmp_path / student))
        first, second = pages
        assert first.url != second.url  # two server processes
        first.click("load-sample")
        first.wait(lambda: first.state("scan_name") == SAMPLE_NAME, 60, "the sample in the first session")
        first.click("detect")
        first.wait(lambda: first.state("has_result") and not first.state("busy"), DETECT_TIMEOUT_S, "a detection")
        thumb = first.element("threshold").find_element(By.CSS_SELECTOR, ".v-slider-thumb")
        thumb.click()
        thumb.send_keys(Keys.HOME)
        first.wait(lambda: first.segment_voxels() > 100000, 60, "the first student's lowest threshold")
        first_voxels = first.segment_voxels()
        assert second.state("scan_name") == "" and not second.state("has_result")
        assert second.state("threshold") == 0 and second.state("segment_voxels") == 0
        second.click("load-sample")
        second.wait(lambda: second.state("scan_name") == SAMPLE_NAME, 60, "the sample in the second session")
        assert first.segment_voxels() == first_voxels and first.state("has_result") is True
        with pytest.raises(urllib.error.HTTPError) as full:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60)
        assert full.value.code == 503  # the class is full at --max-sessions
        sessions = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/sessions", timeout=30).read())
        assert sum(s["assigned"] for s in sessions) == 2
    finally:
        for page in pages:
            page.close()
        stop(launcher)

"""Time and memory of one web-app session, as a student meets them: prints a table for the README.

Starts a session server (``python -m AnomalyDetectionWeb.server``), opens it in Debian's headless
Chromium and measures, over ``--runs`` fresh sessions: process start to a listening server, page
load to connected, *Load sample* to the scan on screen (the first image), *Detect anomalies* to
the map on screen, and the server's resident memory idle, with the scan and after a detection.
Needs the browser of ``scripts/install_browser.sh``. Usage: ``.venv/bin/python scripts/web_benchmark.py``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))

from web_page import Page, brain_pixels, free_port, heat_pixels, stop, wait_for_line  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_session(device: str) -> Dict[str, float]:
    port = free_port()
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "AnomalyDetectionWeb.server", "--port", str(port),
                               "--device", device], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              cwd=ROOT)
    page = None
    try:
        wait_for_line(server, "READY", 180)
        figures = {"server start (s)": time.perf_counter() - started}
        opened = time.perf_counter()
        page = Page(f"http://127.0.0.1:{port}/", Path(tempfile.mkdtemp(prefix="ad-web-bench-")))
        figures["page connected (s)"] = time.perf_counter() - opened
        figures["memory idle (MB)"] = rss_mb(server.pid)
        clicked = time.perf_counter()
        page.click("load-sample")
        page.wait(lambda: brain_pixels(page.view(0)) > 0.15, 60, "the scan on screen")
        figures["load sample to first image (s)"] = time.perf_counter() - clicked
        figures["memory with the scan (MB)"] = rss_mb(server.pid)
        before = heat_pixels(page.view(0))
        clicked = time.perf_counter()
        page.click("detect")
        page.wait(lambda: page.state("has_result") and not page.state("busy"), 600, "the detection")
        page.wait(lambda: heat_pixels(page.view(0)) > before + 3000, 60, "the map on screen")
        figures["detect to map on screen (s)"] = time.perf_counter() - clicked
        figures["memory after a detection (MB)"] = rss_mb(server.pid)
        return figures
    finally:
        if page is not None:
            page.close()
        stop(server)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    runs = [one_session(args.device) for _ in range(args.runs)]
    print(f"| measure (sample scan, default model, {args.runs} sessions) | median | min | max |")
    print("|---|---|---|---|")
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(f"| {key} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

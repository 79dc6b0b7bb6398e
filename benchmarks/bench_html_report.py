"""The HTML report for a 500-photo album: time to write it, its size, and how it opens.

    python benchmarks/bench_html_report.py [--shared ../shared] [--photos 500]

Runs the real `fix` once on the real photos of shared/data/real_lq/whole (`--model resample
--detector dlib`, so it is quick) for its report document, repeats those entries up to
``--photos`` photos, writes the page (each entry gets its own thumbnails, as a real album
would), and opens it in Debian's chromium (Playwright): time to the load event, how many
images the browser has fetched by then (lazy loading), and the time from pressing End to the
last photo's images being decoded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from refrestore.report import write_html_report

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--photos", type=int, default=500)
    args = parser.parse_args()
    whole = args.shared / "data" / "real_lq" / "whole"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        report = tmp / "run.json"
        env = dict(os.environ, REFRESTORE_HOME=str(tmp / "home"))
        subprocess.run([sys.executable, "-m", "refrestore", "fix", str(whole), "-o", str(tmp / "out"), "-q",
                        "--model", "resample", "--detector", "dlib", "--json", str(report)], check=True, env=env)
        doc = json.loads(report.read_text())
        base = doc["images"]
        doc["images"] = [dict(base[i % len(base)]) for i in range(args.photos)]
        faces = sum(len(im["faces"]) for im in doc["images"])
        page = tmp / "album" / "report.html"
        start = time.perf_counter()
        write_html_report(page, doc)
        written = time.perf_counter() - start
        print(f"{args.photos} photos, {faces} faces: page written in {written:.1f} s "
              f"({1000 * written / args.photos:.0f} ms a photo); page {page.stat().st_size / 1e6:.2f} MB, "
              f"images {folder_mb(page.with_name('report_files')):.0f} MB")

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            start = time.perf_counter()
            tab.goto(page.as_uri())
            tab.wait_for_load_state("load")
            loaded = time.perf_counter() - start
            total = tab.evaluate("document.images.length")
            fetched = tab.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length")
            start = time.perf_counter()
            tab.keyboard.press("End")
            tab.wait_for_function(
                "Array.from(document.querySelector('section.photo:last-of-type').querySelectorAll('img'))"
                ".every(i => i.complete && i.naturalWidth > 0)")
            jumped = time.perf_counter() - start
            browser.close()
        print(f"opened in {loaded:.2f} s with {fetched} of {total} images fetched (lazy loading); "
              f"End -> last photo decoded in {jumped:.2f} s")


if __name__ == "__main__":
    main()

"""The HTML report in a real browser: Debian's chromium, headless, driven by Playwright.

One real `fix --html` run (real photos, a real gallery, a bad file) makes the page; the
browser checks that it loads with no console errors, every image decodes, the slider's
split follows a drag, the keys move between photos, and takes a screenshot.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("REFRESTORE_CHROMIUM", "/usr/bin/chromium"))
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _fix(args: list[str], home: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, REFRESTORE_HOME=str(home), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "refrestore", "fix", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def album_report(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A report of: a degraded photo of a person in the gallery, a stranger, a broken file."""
    root = tmp_path_factory.mktemp("html")
    person = "00005"
    gallery = root / "gallery" / person
    gallery.mkdir(parents=True)
    # All of the person's other photos, as in the README demo (three are too few for RefSel to be sure).
    for src in sorted((shared_dir / "data" / "refbench" / "hq" / person).glob("*.png")):
        shutil.copyfile(src, gallery / src.name)
    album = root / "album"
    album.mkdir()
    shutil.copyfile(shared_dir / "data" / "refbench" / "real_lq_no_gt" / f"{person}_17.png", album / "a_known.png")
    shutil.copyfile(shared_dir / "data" / "real_lq" / "whole" / "gfpgan_Blake_Lively.jpg", album / "b_stranger.jpg")
    (album / "c_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    page, report = root / "out" / "report.html", root / "out" / "report.json"
    proc = _fix([str(album), "--refs", str(root / "gallery"), "-o", str(root / "out"), "--detector", "dlib",
                 "--model", "resample", "--html", str(page), "--json", str(report)], root / "home")
    assert proc.returncode == 1, proc.stderr  # the broken file fails, the others are done
    assert page.is_file(), proc.stderr
    return page, json.loads(report.read_text())


def test_html_report_content_matches_the_json_report(album_report: tuple[Path, dict]) -> None:
    page, data = album_report
    text = page.read_text(encoding="utf-8")
    statuses = {Path(im["input"]).name: im["status"] for im in data["images"]}
    assert statuses == {"a_known.png": "ok", "b_stranger.jpg": "ok", "c_broken.jpg": "error"}
    known = next(im for im in data["images"] if im["input"].endswith("a_known.png"))
    ref = known["faces"][0]["reference"]
    assert ref is not None  # the person is in the gallery
    assert Path(ref["path"]).name in text and "no reference" in text  # the stranger has none
    assert "c_broken.jpg" in text and "1 failed" in text
    assert "http://" not in text and "https://" not in text  # nothing from the network
    files = page.with_name("report_files")
    for src in __import__("re").findall(r'src="report_files/([^"]+)"', text):
        assert (files / src).is_file(), src


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield b
        b.close()


def test_html_report_in_a_real_browser(album_report: tuple[Path, dict], browser, tmp_path: Path) -> None:
    page_path, data = album_report
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")

    # Every image decodes (lazy ones once scrolled into view).
    images = page.locator("img")
    assert images.count() >= 6
    for i in range(images.count()):
        images.nth(i).scroll_into_view_if_needed()
        images.nth(i).evaluate("img => img.decode()")
    sizes = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert all(done and width > 0 for _, done, width in sizes), sizes

    # The slider's split follows a drag across the photo.
    box = page.locator(".compare").first
    box.scroll_into_view_if_needed()
    b = box.bounding_box()
    assert b is not None and b["width"] > 50
    before_clip = box.locator("img.before").evaluate("e => getComputedStyle(e).clipPath")
    page.mouse.move(b["x"] + b["width"] * 0.5, b["y"] + b["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] * 0.35, b["y"] + b["height"] / 2, steps=4)
    page.mouse.move(b["x"] + b["width"] * 0.2, b["y"] + b["height"] / 2, steps=4)
    page.mouse.up()
    split = float(box.get_attribute("data-split") or "nan")
    assert abs(split - 20) < 3, split
    assert box.locator("img.before").evaluate("e => getComputedStyle(e).clipPath") != before_clip
    handle = box.locator(".handle").bounding_box()
    assert handle is not None and abs(handle["x"] - (b["x"] + b["width"] * 0.2)) < 6

    # Keyboard navigation between photos: the dragged photo is the current one.
    assert page.evaluate("document.querySelector('section.photo.current').id") == "photo-1"
    page.keyboard.press("j")
    assert page.evaluate("document.querySelector('section.photo.current').id") == "photo-2"
    page.keyboard.press("End")
    assert page.evaluate("document.querySelector('section.photo.current').id") == f"photo-{len(data['images'])}"
    page.keyboard.press("k")
    assert page.evaluate("document.querySelector('section.photo.current').id") == f"photo-{len(data['images']) - 1}"

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert problems == []
    page.close()

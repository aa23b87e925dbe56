"""The page in a real headless Chromium against a real uvicorn server running the demo model on the CPU.

It takes a screenshot mid-session into its temporary folder; with LONGLIVE_UPDATE_SCREENSHOT=1 it also
replaces the README's (`example/web_page.png`), so an ordinary run leaves the repository as it was.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(
        "no chromium on PATH: Debian's package is not installed (apt-get install -y chromium; .ci/run does)",
        allow_module_level=True,
    )
pytest.importorskip("playwright", reason="playwright is not installed (the dev extra)")
pytest.importorskip("uvicorn", reason="longlive serve needs the serve extra: pip install -e '.[serve]'")

import uvicorn  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from longlive.config import load_config  # noqa: E402
from longlive.pipeline import VideoConditionalPipeline  # noqa: E402
from longlive.server import LiveServer, ServeSettings, build_app  # noqa: E402
from longlive.video_io import read_frames  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "example" / "web_page.png"
UPDATE_SCREENSHOT = os.environ.get("LONGLIVE_UPDATE_SCREENSHOT") == "1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RED, BLUE = "a red square moves to the right", "the red square turns blue"
HOSTILE = '<img src=x onerror="window.pwned=1">the blue square'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_url(one_thread, tmp_path):
    """A uvicorn server on a free loopback port around the demo model; its URL, then it is shut down."""
    cfg = load_config(REPO / "configs" / "demo_video_conditional.yaml")
    server = LiveServer(VideoConditionalPipeline.from_config(cfg), ServeSettings(work_dir=tmp_path / "serve"))
    port = free_port()
    config = uvicorn.Config(build_app(server), host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not web.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert web.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    web.should_exit = True
    thread.join(30)


def colour_pixels(png: bytes) -> dict[str, int]:
    """Pixels of the demo world's red and blue in a screenshot (its background is light grey)."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return {
        "red": int(((r > 150) & (g < 110) & (b < 110)).sum()),
        "blue": int(((b > 150) & (r < 110) & (g < 140)).sum()),
    }


def canvas_pixels(page) -> np.ndarray:
    """What the canvas holds now, RGBA [H, W, 4], read through its 2D context."""
    script = (
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);"
        " return [c.height, Array.from(d.data)]; }"
    )
    height, data = page.eval_on_selector("#screen", script)
    return np.asarray(data, dtype=float).reshape(height, -1, 4)


def server_state(url: str) -> dict:
    with urllib.request.urlopen(url + "api/state", timeout=10) as response:
        return json.load(response)["session"]


def test_web_page_in_browser(live_url, tmp_path):
    """Start under the red prompt, see frames arrive, type the blue prompt: the page turns the square blue,
    the timeline shows where the switch landed, and the downloaded mp4 has every frame."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            accept_downloads=True,
            viewport={"width": 1200, "height": 860},
        )
        page = browser.pages[0] if browser.pages else browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(live_url)
        page.wait_for_selector("#connection:text('connected')")

        page.fill("#start-prompt", RED)
        page.check("#no-limit")  # until Stop
        page.click("#start")
        page.wait_for_function("+(document.getElementById('screen').dataset.frame ?? -1) >= 4")
        first = canvas_pixels(page)
        page.wait_for_function("+(document.getElementById('screen').dataset.frame ?? -1) >= 8")
        assert np.abs(canvas_pixels(page) - first).mean() > 1, "the canvas does not change as frames arrive"
        before = colour_pixels(page.locator("#screen").screenshot())
        assert before["red"] > 400 and before["blue"] < before["red"] / 4, before

        page.fill("#prompt", BLUE)
        page.press("#prompt", "Enter")
        page.wait_for_selector("#timeline li:nth-child(2)")
        entry = page.inner_text("#timeline li:nth-child(2)")
        assert BLUE in entry and "recached latent frames" in entry, entry
        switch = server_state(live_url)["timeline"][1]
        page.wait_for_function(
            f"+(document.getElementById('screen').dataset.frame ?? -1) >= {switch['video_frame'] + 8}"
        )
        after = colour_pixels(page.locator("#screen").screenshot())
        assert after["blue"] > 400 and after["red"] < after["blue"] / 4, (after, switch)
        assert page.locator("#timeline-bar .mark").count() == 2
        page.screenshot(path=str(tmp_path / "page.png"))  # mid-session, the blue square on the canvas

        # A prompt is text, never markup: typed HTML shows as typed and runs nothing.
        page.fill("#prompt", HOSTILE)
        page.press("#prompt", "Enter")
        page.wait_for_selector("#timeline li:nth-child(3)")
        assert HOSTILE in page.inner_text("#timeline li:nth-child(3)")
        assert page.locator("#timeline img").count() == 0 and page.evaluate("window.pwned === undefined")

        page.click("#stop")
        state = server_state(live_url)
        deadline = time.monotonic() + 40
        while not state["done"] and time.monotonic() < deadline:
            time.sleep(0.2)
            state = server_state(live_url)
        assert state["done"] and state["length"] is None and state["frames"] > switch["video_frame"], state
        page.wait_for_selector("#download-video[aria-disabled=false]")
        with page.expect_download() as download:
            page.click("#download-video")
        download.value.save_as(tmp_path / "session.mp4")
        assert read_frames(tmp_path / "session.mp4").shape == (state["frames"], 64, 64, 3)
        browser.close()
    if UPDATE_SCREENSHOT:  # only once every check above passed
        shutil.copyfile(tmp_path / "page.png", SCREENSHOT)

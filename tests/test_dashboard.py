"""The web dashboard in a real browser: Debian's chromium driven by Playwright against a
whole stack under ``tidzam_ctl up``, a real 32-channel recording replayed in real time.

It loads every screen (desktop and phone sizes, a screenshot of each under
``test-output/dashboard/``), sees a detection appear in the live grid within 5 s of its
row being committed, measures the live grid's load with 32 channels live, clicks a mixer
control and finds it in ``mixer_log``, labels two samples in the review grid and finds the
``SampleLabelled`` events, and checks that the page asked nothing of anyone but the
gateway."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from audio.decode import decode_file
from bus.connect import connect
from bus.history import read_subject
from bus_schemas import SampleLabelled
from bus_schemas import subjects as subj
from bus_schemas.streams import CONTROL
from tests.audio_files import write_pcm
from tests.real_audio import DAY, MEGAGLEST, NIGHT, RAIN, real_file
from tests.stack_helpers import REPO, ctl, replay_in_background, up_with_token, wait_for
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUT = Path(os.environ.get("TIDZAM_TEST_OUTPUT", REPO / "test-output")) / "dashboard"
CHANNELS = 32
SECONDS = 40
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
SCREENS = ("live", "channel/field/0", "today", "history", "archive", "review", "models")

# the observer the test installs in the page: every change of a live tile's label, with
# the browser's clock (the same machine's as the test's)
OBSERVE = """() => {
  window.__seen = [];
  new MutationObserver((changes) => {
    for (const c of changes) {
      const t = c.target;
      if (c.attributeName === 'data-label' && t.dataset.source)
        window.__seen.push([Date.now() / 1000, t.dataset.source, Number(t.dataset.channel),
                            t.dataset.label, t.title]);
    }
  }).observe(document.getElementById('view'), {subtree: true, attributes: true,
                                               attributeFilter: ['data-label']});
}"""


def field_recording(dest: Path) -> Path:
    """32 channels of real recordings (three megaglest soundscapes, each channel its own
    offset), SECONDS long, as one WAV file."""
    sources = [decode_file(real_file(MEGAGLEST, p))[0] for p in (RAIN, DAY, NIGHT)]
    n = SECONDS * 48_000
    channels = []
    for c in range(CHANNELS):
        audio = sources[c % 3][c % 2]
        start = (c * 48_000 * 3) % max(1, len(audio) - 1)
        channels.append(np.resize(np.roll(audio, -start), n))
    return write_pcm(dest / "field.wav", np.stack(channels).astype(np.float32))


def first_detection(stack: Stack, source: str, timeout: float) -> tuple[float, int, str, str]:
    """When the first detection row of ``source`` was seen committed (this clock), its
    channel, window start (the seed's time format) and label."""
    deadline = time.time() + timeout
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        while time.time() < deadline:
            row = conn.execute(
                "SELECT channel, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD-HH24-MI-SS.MS'),"
                " label FROM detections WHERE source = %s AND label <> 'quiet'"
                " ORDER BY time, channel LIMIT 1", (source,)).fetchone()
            if row is not None:
                return time.time(), int(row[0]), str(row[1]), str(row[2])
            time.sleep(0.05)
    raise AssertionError(f"no detection of {source} committed in {timeout} s")


def sign_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#who:has-text('signed in')")


def labelled(stack: Stack) -> list[SampleLabelled]:
    async def read() -> list[SampleLabelled]:
        nc = await connect(stack.nats_url, "pytest-labels")
        try:
            events, _ = await read_subject(nc.jetstream(), CONTROL.name, subj.LABELS,
                                           SampleLabelled)
            return [e for _, e in events]
        finally:
            await nc.drain()
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        return pool.submit(asyncio.run, read()).result()


@pytest.mark.timeout(600)
def test_the_dashboard_in_a_real_browser(tmp_path: Path) -> None:
    home = tmp_path / "home"
    OUT.mkdir(parents=True, exist_ok=True)
    recording = field_recording(tmp_path)
    try:
        token = up_with_token(home)
        stack = Stack(CtlSettings(home=home))
        url = json.loads(ctl(home, "status", "--json").stdout)["services"]["gateway"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                run_in(browser, stack, home, url, token, recording)
            finally:
                browser.close()
    finally:
        ctl(home, "down")


def run_in(browser: Browser, stack: Stack, home: Path, url: str, token: str,
           recording: Path) -> None:
    requests: list[str] = []
    context = browser.new_context(viewport=SIZES["desktop"])
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/#/live")
    sign_in(page, token)
    # rules first, from the page's own REST helper: samples of every class, often
    assert page.evaluate("""async () => (await fetch('/api/rules', {method: 'PUT',
        headers: {'Authorization': 'Bearer ' + localStorage.getItem('tidzam.token'),
                  'Content-Type': 'application/json'},
        body: JSON.stringify({field: {rate: 1.0, classes: '*', cooldown_s: 2}})})).status
        """) == 200
    page.evaluate(OBSERVE)

    replay = replay_in_background(home, str(recording), "--source", "field", "--speed", "1",
                                  "--start", "2025-06-01T05:00:00Z")
    try:
        committed, channel, window, label = first_detection(stack, "field", 60)
        wait_for(lambda: any(s[1:4] == ["field", channel, label] and window in s[4]
                             for s in page.evaluate("window.__seen")), 10,
                 "the detection in the live grid")
        shown = min(s[0] for s in page.evaluate("window.__seen")
                    if s[1:4] == ["field", channel, label] and window in s[4])
        print(f"detection {label} on channel {channel} at {window}: committed "
              f"{committed:.3f}, shown {shown:.3f} ({shown - committed:+.2f} s)")
        assert shown - committed <= 5.0

        # the live grid's load with 32 channels live: navigation to every tile labelled
        fresh = context.new_page()
        started = time.time()
        fresh.goto(f"{url}/#/live")
        fresh.wait_for_function(f"document.querySelectorAll('.tile[data-label]').length >= "
                                f"{CHANNELS}", timeout=10_000)
        load_s = time.time() - started
        print(f"live grid with {CHANNELS} live channels loaded in {load_s:.2f} s")
        assert load_s < 2.0
        fresh.close()

        # a mixer control: the real MixerCommand, found in mixer_log
        page.goto(f"{url}/#/channel/field/3")
        page.wait_for_selector("img.spectrogram[src]")
        page.get_by_role("button", name="Mute", exact=True).click()
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            wait_for(lambda: conn.execute(
                "SELECT count(*) FROM mixer_log WHERE source = 'field' AND channel = 3 "
                "AND kind = 'command' AND action = 'mute' AND origin = 'manual'"
            ).fetchone() == (1,), 20, "the mute in mixer_log")
        assert replay.wait(timeout=120) == 0, replay.stderr.read() if replay.stderr else ""
    finally:
        if replay.poll() is None:
            replay.kill()

    # two samples labelled in the review grid, by keyboard
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        wait_for(lambda: (conn.execute("SELECT count(*) FROM samples WHERE path IS NOT NULL")
                          .fetchone() or (0,))[0] >= 2, 60, "two extracted samples")
    page.goto(f"{url}/#/review")
    first = page.locator(".tile.sample").first
    first.wait_for()
    first.focus()
    page.keyboard.press("a")  # accept the proposal
    second = page.locator(".tile.sample").nth(1)
    page.wait_for_function("document.activeElement && document.activeElement.dataset.id "
                           "&& document.activeElement !== document.querySelector('.tile')")
    second.press("r")
    page.fill("input.relabel", "wind")
    page.keyboard.press("Enter")
    page.wait_for_selector(".tile.sample[data-verdict='wind']")
    ids = [first.get_attribute("data-id"), second.get_attribute("data-id")]
    wait_for(lambda: {e.sample_id for e in labelled(stack)} >= set(ids), 20,
             "the SampleLabelled events")
    events = {e.sample_id: e for e in labelled(stack)}
    assert events[str(ids[1])].label == "wind"
    assert events[str(ids[0])].label == events[str(ids[0])].previous_label  # accepted

    # every screen, desktop and phone, with a screenshot each
    for size, viewport in SIZES.items():
        page.set_viewport_size(viewport)
        for screen in SCREENS:
            page.goto(f"{url}/#/{screen}")
            name = screen.split("/")[0]
            page.wait_for_selector(f"main[data-screen='{name}'][data-ready]")
            if name == "channel":
                page.wait_for_function("(() => { const i = document.querySelector("
                                       "'img.spectrogram'); return i && i.complete && "
                                       "i.naturalWidth > 0; })()")
            page.wait_for_load_state("networkidle")
            assert not page.locator("#message.error").is_visible(), (
                screen, page.locator("#message").text_content())
            shown = page.locator("main").inner_text()
            assert not re.search(r"\b(null|undefined|NaN)\b", shown), (screen, shown[:500])
            page.screenshot(path=str(OUT / f"{name}-{size}.png"), full_page=True)
    assert not errors, errors
    outside = [r for r in requests if not r.startswith((url, "blob:", "data:"))]
    assert not outside, outside
    assert len(list(OUT.glob("*.png"))) >= 2 * len(SCREENS)

"""The rating page in a real headless Chromium (Debian's `chromium`, driven by playwright-python):
the page loads, the audio element loads the clip, an answer is taken only after the clips were heard to
the end (or listening was skipped with the visible S key), ratings go in by mouse and by keyboard,
rating resumes after a server restart, two raters rate at once, A/B votes, and a long prompt leaves the
players and the scales in view."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from rating_helpers import serving, write_clips

from deramos_reward.rating import build_items, rater_order, read_clips

WAIT_MS = 20_000  # upper bound of every wait on the page (the machine may be loaded)
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _find_chromium() -> str | None:
    return os.environ.get("DERAMOS_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM)), None)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium; installed with apt-get when missing and we are root (CI on a fresh machine)."""
    path = _find_chromium()
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=900, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, timeout=1800, env=env)
        path = _find_chromium()
    if path is None:
        pytest.fail(
            "the browser tests need headless Chromium: apt-get install chromium (or set DERAMOS_CHROMIUM)"
        )
    return path


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=chromium_path, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 900, "height": 900})
    yield context.new_page()
    context.close()


def _expect():
    from playwright.sync_api import expect

    return expect


def _lines(path) -> list[dict]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def _audio_loaded(page, count: int = 1) -> None:
    # a function, not an expression: the page's CSP forbids eval, which expressions would need
    page.wait_for_function(
        "(count) => { const all = [...document.querySelectorAll('audio')];"
        " return all.length === count && all.every((a) => a.duration > 0); }",
        arg=count,
        timeout=WAIT_MS,
    )


def _listen(page, index: int, key: str) -> None:
    """Play clip ``index`` with its key and wait until it has been heard to the end."""
    page.keyboard.press(key)
    page.wait_for_function("(i) => document.querySelectorAll('audio')[i].ended", arg=index, timeout=WAIT_MS)


def _order(manifest, rater: str) -> list[str]:
    clips = read_clips(manifest)
    return [i.id for i in rater_order(build_items(clips, "mos"), rater)]


def test_mos_page_loads_plays_and_takes_mouse_and_keyboard_ratings(page, tmp_path):
    manifest, out = write_clips(tmp_path), tmp_path / "ratings.jsonl"
    order = _order(manifest, "alice")
    with serving(manifest, out) as server:
        page.goto(server.url + "?rater=alice")
        expect = _expect()
        expect(page.locator("#progress")).to_have_text("1 of 6", timeout=WAIT_MS)
        _audio_loaded(page)
        assert page.evaluate("document.querySelector('audio').duration") == pytest.approx(0.5, abs=0.01)
        assert page.locator(".judge").count() == 0  # hidden without --show-judge
        assert "musical impression" in page.locator("#scale-mi").inner_text()
        expect(page.locator("#submit")).to_be_disabled()

        page.click('button.score[data-scale="mi"][data-value="4"]')  # mouse
        page.click('button.score[data-scale="ta"][data-value="2"]')
        expect(page.locator("#listen")).to_be_visible()  # not heard yet: no answer taken
        expect(page.locator("#listen")).to_contain_text("Listen to the clip to the end")
        expect(page.locator("#submit")).to_be_disabled()
        page.keyboard.press("Enter")
        _listen(page, 0, " ")  # Space plays it
        expect(page.locator("#listen")).to_be_hidden()
        expect(page.locator("#submit")).to_be_enabled()
        assert _lines(out) == []
        page.click("#submit")
        expect(page.locator("#progress")).to_have_text("2 of 6", timeout=WAIT_MS)
        _audio_loaded(page)

        for key in ("5", "1", "Enter"):  # keyboard: MI then TA; Enter does nothing before a listen
            page.keyboard.press(key)
        expect(page.locator("#progress")).to_have_text("2 of 6")
        page.keyboard.press("s")  # the visible key: rate without listening
        page.keyboard.press("Enter")
        expect(page.locator("#progress")).to_have_text("3 of 6", timeout=WAIT_MS)
        page.click("#skip")  # the same by mouse
        for key in ("3", "m", "2", "t", "4", "Enter"):  # M / T pick the scale
            page.keyboard.press(key)
        expect(page.locator("#progress")).to_have_text("4 of 6", timeout=WAIT_MS)
    lines = _lines(out)
    assert [(line["mi"], line["ta"], line["rater"]) for line in lines] == [
        (4, 2, "alice"),
        (5, 1, "alice"),
        (2, 4, "alice"),
    ]
    assert [line["id"] for line in lines] == [f"{i}@alice" for i in order[:3]]


def test_rating_resumes_after_a_server_restart(page, tmp_path):
    manifest, out = write_clips(tmp_path), tmp_path / "ratings.jsonl"
    order = _order(manifest, "bob")
    expect = _expect()
    with serving(manifest, out) as server:
        page.goto(server.url + "?rater=bob")
        for n in (2, 3):
            expect(page.locator("#submit")).to_be_visible(timeout=WAIT_MS)
            for key in ("s", "3", "3", "Enter"):
                page.keyboard.press(key)
            expect(page.locator("#progress")).to_have_text(f"{n} of 6", timeout=WAIT_MS)
    with serving(manifest, out) as server:  # a new process would do the same: read the file, skip rated items
        page.goto(server.url + "?rater=bob")
        expect(page.locator("#progress")).to_have_text("3 of 6", timeout=WAIT_MS)
        _audio_loaded(page)
        src = page.evaluate("document.querySelector('audio').getAttribute('src')")
        clips = read_clips(manifest)
        assert clips[int(src.split("/")[-1])].id == order[2]
        for n in range(4, 8):
            for key in ("s", "4", "2", "Enter"):
                page.keyboard.press(key)
            done = f"{n} of 6" if n <= 6 else "6 of 6 rated"
            expect(page.locator("#progress")).to_have_text(done, timeout=WAIT_MS)
        expect(page.locator("#finished")).to_be_visible(timeout=WAIT_MS)
    assert [line["id"] for line in _lines(out)] == [f"{i}@bob" for i in order]


def test_two_raters_at_once(browser, tmp_path):
    manifest, out = write_clips(tmp_path), tmp_path / "ratings.jsonl"
    expect = _expect()
    contexts = [browser.new_context() for _ in range(2)]
    try:
        with serving(manifest, out) as server:
            pages = [c.new_page() for c in contexts]
            for p, rater in zip(pages, ("carol", "dave")):
                p.goto(server.url + f"?rater={rater}")
            for n in range(6):
                for p in pages:
                    expect(p.locator("#progress")).to_have_text(f"{n + 1} of 6", timeout=WAIT_MS)
                    p.click(f'button.score[data-scale="mi"][data-value="{1 + n % 5}"]')
                    p.click(f'button.score[data-scale="ta"][data-value="{5 - n % 5}"]')
                    p.click("#skip")
                for p in pages:  # both submit before either waits
                    p.click("#submit")
            for p in pages:
                expect(p.locator("#finished")).to_be_visible(timeout=WAIT_MS)
    finally:
        for c in contexts:
            c.close()
    lines = _lines(out)
    assert len(lines) == 12 and len({line["id"] for line in lines}) == 12
    for rater in ("carol", "dave"):
        mine = [line for line in lines if line["rater"] == rater]
        assert [line["id"] for line in mine] == [f"{i}@{rater}" for i in _order(manifest, rater)]
        assert [(line["mi"], line["ta"]) for line in mine] == [(1 + n % 5, 5 - n % 5) for n in range(6)]


def test_ab_page_votes_by_keyboard_and_mouse_and_shows_the_judge(page, tmp_path):
    manifest, out = write_clips(tmp_path), tmp_path / "votes.jsonl"
    expect = _expect()
    with serving(manifest, out, mode="ab", show_judge=True) as server:
        page.goto(server.url + "?rater=erin")
        expect(page.locator("#progress")).to_have_text("1 of 6", timeout=WAIT_MS)
        _audio_loaded(page, count=2)
        assert (
            page.locator(".judge").count() == 2 and "judge: MI" in page.locator(".judge").first.inner_text()
        )
        page.keyboard.press("b")
        expect(page.locator("#listen")).to_contain_text("Listen to both clips")
        _listen(page, 0, "1")
        expect(page.locator("#submit")).to_be_disabled()  # B not heard yet
        _listen(page, 1, "2")
        page.keyboard.press("Enter")
        expect(page.locator("#progress")).to_have_text("2 of 6", timeout=WAIT_MS)
        _audio_loaded(page, count=2)
        page.click('button.choice[data-choice="a"]')
        page.click("#skip")
        page.click("#submit")
        expect(page.locator("#progress")).to_have_text("3 of 6", timeout=WAIT_MS)
        page.keyboard.press("t")
        page.keyboard.press("s")
        page.keyboard.press("Enter")
        expect(page.locator("#progress")).to_have_text("4 of 6", timeout=WAIT_MS)
    assert [line["choice"] for line in _lines(out)] == ["b", "a", "tie"]


def test_page_with_a_token(page, tmp_path):
    manifest, out = write_clips(tmp_path), tmp_path / "ratings.jsonl"
    expect = _expect()
    with serving(manifest, out, token="tok-123") as server:
        page.goto(server.url + "?rater=fay")
        expect(page.locator("#status")).to_contain_text("token", timeout=WAIT_MS)
        page.goto(server.url + "?rater=fay&token=tok-123")
        _audio_loaded(page)
        for key in ("s", "2", "5", "Enter"):
            page.keyboard.press(key)
        expect(page.locator("#progress")).to_have_text("2 of 6", timeout=WAIT_MS)
    assert [(line["mi"], line["ta"]) for line in _lines(out)] == [(2, 5)]


def test_the_page_asks_for_a_rater_id(page, tmp_path):
    manifest, out = write_clips(tmp_path), tmp_path / "ratings.jsonl"
    expect = _expect()
    with serving(manifest, out) as server:
        page.goto(server.url)
        expect(page.locator("#who")).to_be_visible(timeout=WAIT_MS)
        page.fill("#rater-input", "gus")
        page.keyboard.press("Enter")
        expect(page.locator("#progress")).to_have_text("1 of 6", timeout=WAIT_MS)
        assert "rater=gus" in page.url


@pytest.mark.parametrize("mode", ["mos", "ab"])
def test_a_long_prompt_leaves_the_players_and_scales_in_view(browser, mode, tmp_path):
    manifest, out = write_clips(tmp_path), tmp_path / "ratings.jsonl"
    long_prompt = "a slow piano piece with soft strings, " * 150 + "x" * 400  # about 6000 characters
    # one prompt for all 6 clips: A/B pairs every two of them (15 items)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**line, "prompt": long_prompt}) + "\n" for line in lines))
    context = browser.new_context(viewport={"width": 800, "height": 720})
    try:
        page = context.new_page()
        with serving(manifest, out, mode=mode) as server:
            page.goto(server.url + "?rater=hal")
            _expect()(page.locator("#progress")).to_have_text(
                "1 of 15" if mode == "ab" else "1 of 6", timeout=WAIT_MS
            )
            wanted = ["audio", "#submit"] + (
                ["#scale-mi", "#scale-ta"] if mode == "mos" else ["#ab .choices"]
            )
            for selector in wanted:
                for box in (
                    page.locator(selector).nth(i).bounding_box()
                    for i in range(page.locator(selector).count())
                ):
                    assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 720, (
                        selector,
                        box,
                    )
            prompt = page.locator("#prompt")
            assert (
                page.evaluate("document.getElementById('prompt').scrollHeight")
                > prompt.bounding_box()["height"]
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= 800  # no sideways scrolling
    finally:
        context.close()

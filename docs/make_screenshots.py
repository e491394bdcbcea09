"""Re-make docs/rate_mos.png and docs/rate_ab.png: the rating page of each mode in headless Chromium.

    python docs/make_screenshots.py [--chromium /usr/bin/chromium]

Clips come from the synthetic corpus (deramos_reward.data.make_corpus) in a temporary folder;
the server binds 127.0.0.1 on a free port. Needs playwright (the [dev] extra) and Debian's chromium.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from deramos_reward.data import make_corpus
from deramos_reward.rating import RatingApp, RatingLog, build_items, read_clips, start_server, stop_server

DOCS = Path(__file__).resolve().parent


def clips_manifest(root: Path) -> Path:
    corpus = make_corpus(root / "corpus", n_systems=3, n_prompts=4, seconds=4.0, seed=2)
    lines = [
        {"path": f"corpus/wav/{c.wav_id}.wav", "prompt": c.prompt, "system": c.system,
         "judge_mi": round(c.true_mi, 2), "judge_ta": round(c.true_ta, 2)}
        for c in corpus.clips
    ]  # fmt: skip
    manifest = root / "clips.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def shoot(
    browser, manifest: Path, mode: str, keys: list[str], out: Path, show_judge: bool, height: int
) -> None:
    clips = read_clips(manifest)
    with RatingLog(manifest.parent / f"{mode}.jsonl", mode, clips, build_items(clips, mode)) as log:
        app = RatingApp(log, str(manifest.parent), judge=[c.judge for c in clips], show_judge=show_judge)
        server = start_server(app, "127.0.0.1", 0)
        try:
            page = browser.new_page(viewport={"width": 860, "height": height}, device_scale_factor=1)
            page.goto(server.url + "?rater=alice")
            page.wait_for_function(
                "() => [...document.querySelectorAll('audio')].length > 0 &&"
                " [...document.querySelectorAll('audio')].every((a) => a.duration > 0)",
                timeout=30_000,
            )
            for key in keys:
                page.keyboard.press(key)
            page.screenshot(path=str(out), full_page=True)
            page.close()
        finally:
            stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        manifest = clips_manifest(Path(tmp))
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        try:
            shoot(browser, manifest, "mos", ["4"], DOCS / "rate_mos.png", show_judge=False, height=740)
            shoot(browser, manifest, "ab", ["a"], DOCS / "rate_ab.png", show_judge=True, height=540)
        finally:
            browser.close()
    print(f"wrote {DOCS / 'rate_mos.png'} and {DOCS / 'rate_ab.png'}")


if __name__ == "__main__":
    main()

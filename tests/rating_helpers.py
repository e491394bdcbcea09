"""Shared set-up of the rating tests: a folder of short clips, its manifest, a server on a free port."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from deramos_reward.rating import RatingApp, RatingLog, build_items, read_clips, start_server, stop_server

PROMPTS = ("a calm piano piece", "fast techno with drums")
SYSTEMS = ("gen_a", "gen_b", "gen_c")


def write_clips(root: Path, seconds: float = 0.5, sample_rate: int = 16_000, codes: bool = False) -> Path:
    """``root/clips/<system>/p<k>.wav`` for every system and prompt, and ``root/clips.jsonl``.

    With ``codes``, each clip also gets ``<clip>.npy`` integer codes [4, 6] (values < 128)."""
    lines = []
    for s, system in enumerate(SYSTEMS):
        folder = root / "clips" / system
        folder.mkdir(parents=True, exist_ok=True)
        for k, prompt in enumerate(PROMPTS):
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            wave = 0.2 * np.sin(2 * np.pi * (220 + 110 * s + 55 * k) * t)
            sf.write(folder / f"p{k}.wav", wave.astype(np.float32), sample_rate, subtype="PCM_16")
            line = {
                "path": f"clips/{system}/p{k}.wav",
                "prompt": prompt,
                "judge_mi": 2.0 + s,
                "judge_ta": 4.0 - s,
            }
            if codes:
                rng = np.random.default_rng([s, k])
                np.save(folder / f"p{k}.npy", rng.integers(0, 128, size=(4, 6)).astype(np.int64))
                line["codes"] = f"clips/{system}/p{k}.npy"
            lines.append(line)
    manifest = root / "clips.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


@contextlib.contextmanager
def serving(manifest: Path, out: Path, mode: str = "mos", **app_options):
    """A rating server on 127.0.0.1 and a free port (yields it); stopped and the log closed after."""
    clips = read_clips(manifest)
    log = RatingLog(out, mode, clips, build_items(clips, mode)).open()
    try:
        judge = [c.judge for c in clips]
        server = start_server(
            RatingApp(log, str(manifest.parent), judge=judge, **app_options), "127.0.0.1", 0
        )
        try:
            yield server
        finally:
            stop_server(server)
    finally:
        log.close()


def request(server, method: str, path: str, body: object = None, headers: dict | None = None):
    """-> (status, parsed JSON or raw bytes). ``path`` is sent exactly as given (no normalisation)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(raw)
        return response.status, raw
    finally:
        conn.close()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to check that nothing changed on disk)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            out[str(path.relative_to(root))] = path.read_bytes() if not path.is_symlink() else b"->link"
    return out

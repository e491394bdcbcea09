"""General-MIDI rendering with a real SoundFont (``tinysoundfont`` + the GM bank shipped by ``pretty_midi``).

```python
from deramos_reward.data.soundfont import Note, SoundFontRenderer
synth = SoundFontRenderer(sample_rate=24_000)
wave = synth.render([Note(0.0, 0.5, 60, 100, program=0)], seconds=1.0)   # [24000] float64
```
``pretty_midi`` ships ``TimGM6mb.sf2`` (a 6 MB General-MIDI bank: piano, guitars, organs,
strings, winds, a drum kit); ``tinysoundfont`` plays it. Both come with the ``[demo]`` extra
(``tinysoundfont`` installed with ``--no-deps``: its only requirement, PyAudio, is for live playback).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .._optional import require

DRUM_CHANNEL = 9
_DEMO_HINT = (
    "pip install 'deramos-reward[demo]' && pip install --no-deps tinysoundfont "
    "(tinysoundfont's PyAudio requirement is only for live playback)"
)


@dataclass(frozen=True)
class Note:
    """One note: onset and duration in seconds, MIDI key 0-127, velocity 1-127.

    program: General-MIDI program 0-127 of a melodic note, or None for a drum hit (the key is
    then a GM percussion key, e.g. 36 kick, 38 snare, 42 closed hi-hat).
    """

    start: float
    duration: float
    key: int
    velocity: int
    program: int | None = 0


def default_soundfont() -> str:
    """Path of the General-MIDI SoundFont inside the installed ``pretty_midi`` package."""
    try:
        pretty_midi = require("pretty_midi")
    except ImportError as err:
        raise ImportError(f"the rendered corpus needs pretty_midi's SoundFont: {_DEMO_HINT}") from err
    path = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretty_midi is installed but ships no SoundFont at {path!r}")
    return path


class SoundFontRenderer:
    """Renders note lists to mono audio; the same notes always give the same samples.

    Channels are assigned per program in order of first use (at most 15 programs per clip),
    drums play on channel 10 (index 9). The synthesizer is reset before every clip, so a clip
    does not depend on what was rendered before it.
    """

    def __init__(self, sample_rate: int = 24_000, soundfont: str | os.PathLike | None = None):
        try:
            tsf = require("tinysoundfont")
        except ImportError as err:
            raise ImportError(f"the rendered corpus needs tinysoundfont: {_DEMO_HINT}") from err
        path = os.fspath(soundfont) if soundfont is not None else default_soundfont()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"soundfont {path!r} does not exist")
        self.sample_rate = int(sample_rate)
        self.synth = tsf.Synth(samplerate=self.sample_rate)
        self.sfid = self.synth.sfload(path)

    def _assign_channels(self, notes: list[Note]) -> dict[int | None, int]:
        channels: dict[int | None, int] = {}
        free = [c for c in range(16) if c != DRUM_CHANNEL]
        for note in notes:
            if note.program in channels:
                continue
            if note.program is None:
                channels[None] = DRUM_CHANNEL
                self.synth.program_select(DRUM_CHANNEL, self.sfid, 128, 0, is_drums=True)
            else:
                if not free:
                    raise ValueError("a clip may use at most 15 melodic programs")
                channels[note.program] = free.pop(0)
                self.synth.program_select(channels[note.program], self.sfid, 0, note.program)
        return channels

    def render(self, notes: list[Note], seconds: float) -> np.ndarray:
        """Notes -> mono float64 audio [round(seconds * sample_rate)] (notes past the end are cut)."""
        n = int(round(seconds * self.sample_rate))
        # reset() only fades the voices of the last clip out quickly; render that fade away
        self.synth.soundfonts[self.sfid].reset()
        self.synth.generate_simple(4096)
        channels = self._assign_channels(notes)
        events = []  # (sample, order, channel, key, velocity): note-offs sort before note-ons
        for note in notes:
            if not (0 <= note.key <= 127 and 1 <= note.velocity <= 127):
                raise ValueError(f"note key must be 0-127 and velocity 1-127, got {note}")
            start = max(0, int(round(note.start * self.sample_rate)))
            stop = start + max(1, int(round(note.duration * self.sample_rate)))
            events.append((start, 1, channels[note.program], note.key, note.velocity))
            events.append((stop, 0, channels[note.program], note.key, 0))
        events.sort()
        out = np.zeros((n, 2), dtype=np.float32)
        pos = 0
        for at, on, chan, key, velocity in [*events, (n, 0, 0, 0, 0)]:
            at = min(at, n)
            if at > pos:
                view = self.synth.generate_simple(at - pos)
                out[pos:at] = np.frombuffer(view, dtype=np.float32).reshape(-1, 2)
                pos = at
            if pos >= n:
                break
            if on:
                self.synth.noteon(chan, key, velocity)
            else:
                self.synth.noteoff(chan, key)
        return out.astype(np.float64).mean(axis=1)

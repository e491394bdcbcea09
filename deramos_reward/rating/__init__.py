"""Human feedback: a listening and rating web app and what its answers feed.

```python
from deramos_reward.rating import read_clips, build_items, RatingLog, RatingApp, start_server
clips = read_clips("clips.jsonl")
with RatingLog("ratings.jsonl", "mos", clips, build_items(clips, "mos")) as log:
    server = start_server(RatingApp(log, audio_root="."), port=0)   # serves in a thread
```

The command line is ``deramos rate`` (serve, ``--export-pairs``, ``--export-mos``) and
``deramos agreement`` (judge vs listeners, listeners vs each other).
"""

from __future__ import annotations

from .agreement import ab_report, bootstrap_alpha, format_report, krippendorff_alpha, mos_report
from .clips import Clip, Item, build_items, check_rater, rater_order, read_clips
from .export import export_mos, export_pairs, read_answers
from .server import RatingApp, RatingServer, start_server, stop_server
from .storage import AlreadyRated, RatingLog, UnknownItem

__all__ = [
    "AlreadyRated",
    "Clip",
    "Item",
    "RatingApp",
    "RatingLog",
    "RatingServer",
    "UnknownItem",
    "ab_report",
    "bootstrap_alpha",
    "build_items",
    "check_rater",
    "export_mos",
    "export_pairs",
    "format_report",
    "krippendorff_alpha",
    "mos_report",
    "rater_order",
    "read_answers",
    "read_clips",
    "start_server",
    "stop_server",
]

"""Split a corpus job across processes and merge the results in input order.

Under ``accelerate launch`` (its torchrun launcher) or ``torchrun`` every process sees ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``. Rank r of K takes the pending jobs r, r + K, r + 2K, ...
(strided, so a manifest sorted by length still balances), appends its rows to its own part file,
and after a barrier rank 0 merges every part into the output in input order. Coordination uses
``torch.distributed`` with the gloo backend: only barriers, no tensors, so it works the same on
CPU-only machines and beside GPUs. Without those variables nothing here starts a process group
and a job runs exactly as a single process.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch.distributed as dist

from .errors import InputError

T = TypeVar("T")

# Ranks wait at the final barrier for the slowest rank: allow long corpus jobs. A rank that dies
# makes the launcher (torchrun) stop the others, so a long timeout never hangs a failed job.
BARRIER_TIMEOUT = timedelta(hours=72)
_PART = re.compile(r"\.part-(\d{5})-of-(\d{5})\.jsonl$")


@dataclass(frozen=True)
class Shard:
    """This process's place in a job: rank ``rank`` of ``world_size`` (``local_rank`` on its host)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {key}={value!r} must be an integer") from None


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """The shard described by ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (rank 0 of 1 without them)."""
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise InputError(f"inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return Shard(rank, world, local)


def init_distributed(env: Mapping[str, str] | None = None) -> Shard:
    """Read the shard from the environment and, for K > 1 processes, join the gloo process group."""
    shard = shard_from_env(env)
    if shard.distributed and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    if dist.is_initialized() and (dist.get_rank(), dist.get_world_size()) != (shard.rank, shard.world_size):
        raise ValueError(
            f"the process group is rank {dist.get_rank()} of {dist.get_world_size()} but the environment says "
            f"rank {shard.rank} of {shard.world_size}"
        )
    return shard


def barrier(shard: Shard) -> None:
    """Wait until every process of the job gets here (no-op for a single process)."""
    if shard.distributed:
        dist.barrier()


def shutdown(shard: Shard) -> None:
    """Leave the process group (if ``init_distributed`` joined one)."""
    if shard.distributed and dist.is_initialized():
        dist.destroy_process_group()


def take(items: Sequence[T], shard: Shard) -> list[T]:
    """This rank's share: items ``rank``, ``rank + K``, ... (every item in exactly one share)."""
    return list(items[shard.rank :: shard.world_size])


def device_for(device: str, shard: Shard) -> str:
    """Give each process its own accelerator: ``"cuda"`` -> ``"cuda:<local_rank>"`` when K > 1.

    An explicit index (``"cuda:1"``) or ``"cpu"`` is kept as given.
    """
    if shard.distributed and ":" not in device and device not in ("cpu", "meta"):
        return f"{device}:{shard.local_rank}"
    return device


def part_path(output: str | os.PathLike, shard: Shard) -> Path:
    """Where rank r of K appends its rows: ``<output>.part-0000r-of-0000K.jsonl`` beside ``output``."""
    output = Path(output)
    return output.with_name(f"{output.name}.part-{shard.rank:05d}-of-{shard.world_size:05d}.jsonl")


def find_parts(output: str | os.PathLike) -> list[Path]:
    """Every part file of ``output`` left by any earlier run, whatever its process count."""
    output = Path(output)
    pattern = os.path.join(glob.escape(str(output.parent)), glob.escape(output.name) + ".part-*-of-*.jsonl")
    return sorted(Path(p) for p in glob.glob(pattern) if _PART.search(p))

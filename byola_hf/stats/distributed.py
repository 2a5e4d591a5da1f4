"""The torchrun side of the statistics: joining the process group, and merging every rank's moments."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import torch

from ..moments import LogMelMoments


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """
    `(rank, world_size)` of this process. Under torchrun (`WORLD_SIZE > 1`) it joins the process group for the
    duration and destroys it on the way out: a gloo group left alive until interpreter exit can abort the process
    ("terminate called without an active exception") after the work is done.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield 0, 1
        return
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if created:
            dist.destroy_process_group()


def gather_and_merge(moments: LogMelMoments) -> LogMelMoments:
    """All ranks' partial moments, merged in rank order so every rank gets the same, deterministic result."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, asdict(moments))
    total = LogMelMoments()
    for partial in gathered:
        total = total.merge(LogMelMoments(**partial))
    return total

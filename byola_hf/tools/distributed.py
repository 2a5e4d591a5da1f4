"""torchrun for the commands: joining the process group, each rank's device, and who reports."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .outputs import follows_rank_zero


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """`(rank, world_size)` of this process. Under torchrun (`WORLD_SIZE > 1`) it joins the process group for the
    duration and destroys it on the way out: a gloo group left alive until interpreter exit can abort the process
    ("terminate called without an active exception") after the work is done."""
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


def device_for_rank(device: str | None) -> str | None:
    """The device this process computes on. A bare `"cuda"` under torchrun means this rank's own GPU, `cuda:LOCAL_RANK`
    (torchrun numbers the processes of one machine from 0, as its GPUs are numbered); any other value is kept."""
    if device != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"


def is_main_process() -> bool:
    """Whether this process reports and writes shared results (rank 0, or the only process: a `RANK` left in the
    environment without a torchrun launch skipped the output folder's claim, and the process then wrote over a
    user's files)."""
    return not follows_rank_zero()


def check_trainer_world_size(training_args, distributed: bool = True) -> None:
    """Refuse a torchrun / accelerate launch in which Trainer would not train together (without a GPU, Trainer runs
    each process alone unless `--use_cpu` is given, and they would write one output folder as separate runs), and a
    process that sees several GPUs: Trainer's DataParallel would split each batch over them (BatchNorm on a fraction
    of it) and take the per-device batch times the GPUs a step, which neither the run record nor a schedule counted
    in batches sees. `distributed`: whether the command trains over several processes."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and not distributed:
        raise ValueError("This command trains in one process: start it without torchrun / accelerate launch.")
    if launched > 1 and training_args.world_size != launched:
        hint = " (on a machine without a GPU, add --use_cpu)" if not torch.cuda.is_available() else ""
        raise ValueError(
            f"Launched as {launched} processes, but Trainer would run them as {training_args.world_size}{hint}; "
            "each would write the same output folder."
        )
    gpus = training_args.n_gpu
    if gpus > 1:
        processes = f"launch one process per GPU (torchrun --nproc_per_node {gpus} ...), or " if distributed else ""
        raise ValueError(
            f"This process sees {gpus} GPUs, over which Trainer would split each batch (DataParallel): "
            f"{processes}pick one GPU with CUDA_VISIBLE_DEVICES."
        )


def check_device_with_workers(device: str | None, num_proc: int | None) -> None:
    """Refuse a GPU with forked `datasets.map` workers, which cannot share a CUDA context."""
    if device is not None and device != "cpu" and num_proc is not None and num_proc > 1:
        raise ValueError(
            f"--device {device} with --num_proc {num_proc}: forked map workers cannot share a GPU; use one process "
            "per GPU with torchrun instead (or drop --num_proc)."
        )

"""Will a run fit? Memory for one rendering batch and the blocks being written, disk for the output.

Both are checked before an output is created, so a run that cannot fit fails at once with a
message naming the argument to change, instead of hours later (or with the machine swapping).
A disk that fills up anyway mid-run becomes a :class:`DiskFullError` that says how many blocks
were kept for ``resume``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DatagenError, UsageError, arg

if TYPE_CHECKING:
    from .models.generator import Generator
    from .recipe import Recipe
    from .writers import DatasetInfo, DatasetWriter


def total_memory(device: Any) -> int | None:
    """Bytes of memory on ``device`` (physical RAM for the CPU), None when unknown."""
    try:
        if getattr(device, "type", str(device)) == "cuda":
            import torch

            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def estimate_memory(gen: Generator, size: tuple[int, int], batch_size: int, block_size: int) -> tuple[int, int]:
    """Rough peak bytes of one rendering batch and of the blocks held for writing: (batch, blocks).

    A forward pass holds about two of its largest activations per sample (a layer's input and
    output, float32), plus the image, noise and mask planes; the writer queue holds up to three
    blocks of uint8 images and masks."""
    h, w = int(size[0]), int(size[1])
    largest = max((i.channels * max(1, i.size_at(h, w)[0]) * max(1, i.size_at(h, w)[1]) for i in gen.layers()),
                  default=0)
    per_sample = 4 * (2 * largest + 8 * h * w)
    return batch_size * per_sample, 3 * block_size * h * w * 4


def check_memory(recipe: Recipe, gen: Generator, size: tuple[int, int], batch_size: int, block_size: int) -> None:
    """Refuse a size whose batch cannot fit in memory, before anything is allocated or written."""
    total = total_memory(gen.device)
    if total is None:
        return
    batch, blocks = estimate_memory(gen, size, batch_size, block_size)
    host_total = total_memory("cpu") or total
    need_dev = batch if gen.device.type == "cuda" else batch + blocks
    if need_dev <= total and blocks <= host_total:
        return
    gib = 1 << 30
    h, w = size
    per = batch / max(batch_size, 1)
    hint = (f"; {arg('batch_size', max(1, int(total // max(per, 1))))} may fit" if batch_size > 1 and per + (0 if gen.device.type == "cuda" else blocks) <= total
            else "; use a smaller size (datagen canvas renders large images tile by tile)")
    raise ConfigError(
        f"{h}x{w} needs about {need_dev / gib:,.1f} GiB of memory for one batch of {batch_size} (and the blocks "
        f"being written), more than the {total / gib:,.1f} GiB of {'GPU' if gen.device.type == 'cuda' else 'RAM'} "
        f"on this machine{hint}", file=recipe.file, field="size")


#: errno values of a full disk (or an exhausted quota).
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(DatagenError):
    """The output's disk filled up while writing; completed blocks are kept for ``--resume``."""


def disk_full_message(out: str | os.PathLike, writer: DatasetWriter, mine: list[int], e: OSError) -> str:
    try:
        kept = len(set(writer.completed_blocks()) & set(mine))
    except Exception:  # the manifest may be unreadable on a full disk: say what is known
        kept = None
    what = f"{kept} of {len(mine)} blocks are complete and kept" if kept is not None else "completed blocks are kept"
    return (f"{out}: disk full ({os.strerror(e.errno or errno.ENOSPC)}); {what}. Free space, then rerun "
            f"the same command with {arg('resume', True)} to continue")


def check_disk(out: str | os.PathLike, info: DatasetInfo, *, shard_index: int = 0, num_shards: int = 1) -> None:
    """Refuse a run whose output cannot fit on the disk, even compressed 4:1 (images compress
    about 2:1, masks much more): a UsageError naming ``num``, before the output is created."""
    import shutil

    p = Path(out).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        usage = shutil.disk_usage(p)
    except OSError:
        return
    if usage.total == 0:  # a pseudo file system (/proc, /sys): the writer says what is wrong with it
        return
    free = usage.free
    nb = len(info.shard_blocks(shard_index, num_shards))  # this worker's blocks (counted, not listed)
    n = nb * info.block_size
    last = info.num_blocks - 1
    if last >= shard_index and (last - shard_index) % num_shards == 0:
        n -= info.num_blocks * info.block_size - info.num_samples  # the short last block is this worker's
    per_pixel = 4 + (4 if info.instances else 0)  # uint8 RGB image + mask (+ uint32 instance id)
    need = n * info.height * info.width * per_pixel // 4  # at 4:1
    if need > free:
        raise UsageError(f"{n:,} samples of {info.height}x{info.width} need at least {human_bytes(need)} "
                         f"on disk (even at 4:1 compression), but {p} has {human_bytes(free)} free; lower {arg('num')}, "
                         f"free space or split the run with {arg('num_shards')} over several disks", param="num")


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


__all__ = ["DISK_FULL", "DiskFullError", "check_disk", "check_memory", "disk_full_message", "estimate_memory",
           "human_bytes", "total_memory"]

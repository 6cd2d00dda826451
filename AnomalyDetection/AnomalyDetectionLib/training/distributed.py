"""Training on several processes with PyTorch DDP: joining the process group, rank 0, and the volume shares.

``torchrun --nproc-per-node N`` (``python -m torch.distributed.run``) starts N copies of the same
command and tells each its place through the environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``. :func:`start` reads it and joins the process group: NCCL when the
training device is CUDA (each process then takes ``cuda:LOCAL_RANK``), Gloo on CPUs. One process
without that environment trains as before, with no group and no communication.

Every rank holds the same normal slices; what differs is which volumes' slices it trains on in an
epoch (:func:`volume_shares`). The gradients are averaged over the ranks by DDP, so the weights stay
identical, and only rank 0 writes the checkpoint and the model file.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..device import resolve_device
from ..errors import DeviceError, DistributedError

#: What torchrun sets in each process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = ("start it with torchrun, e.g. 'torchrun --nproc-per-node 2 -m AnomalyDetectionLib.cli train "
               "NORMAL... -o M.pt --distributed' (one process per GPU, or per share of the CPUs)")


@dataclass
class DistributedRun:
    """This process's place in a training run: rank, world size, backend and device.

    The default is one process alone (``world_size`` 1, no ``backend``), where every helper is a no-op.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the checkpoint and the model file, and calibrates."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.is_distributed:
            torch.distributed.barrier()

    def broadcast(self, value: Any, source: int = 0) -> Any:
        """``value`` of rank ``source`` on every rank (any picklable object)."""
        if not self.is_distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=source)
        return box[0]

    def sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sum of ``values`` over the ranks, in float64; every rank gets the same numbers."""
        if not self.is_distributed:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return [float(v) for v in tensor.cpu()]

    def __enter__(self) -> DistributedRun:
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        self.close(wait=exc_type is None)

    def close(self, wait: bool = True) -> None:
        """Leave the process group if :func:`start` joined it (a group the caller made stays).

        ``wait`` first waits for every rank to get here (not after an error: the others may never come).
        """
        if self.owns_group and torch.distributed.is_initialized():
            # Every rank past its last collective, and no DDP reducer left holding the group: a
            # group torn down under a peer's pending work, or freed at interpreter exit, can abort.
            if wait:
                torch.distributed.barrier()
            gc.collect()
            torch.distributed.destroy_process_group()
        self.owns_group = False


def launch_environment() -> Optional[Dict[str, str]]:
    """The torchrun variables of this process, or None when it was not started by torchrun (no ``WORLD_SIZE``)."""
    if "WORLD_SIZE" not in os.environ:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if not os.environ.get(name)]
    if missing:
        raise DistributedError(f"WORLD_SIZE is set but {', '.join(missing)} not: {LAUNCH_HINT}")
    return {name: os.environ[name] for name in TORCHRUN_VARIABLES}


def launch_rank() -> int:
    """This process's global rank as torchrun set it (0 without torchrun): for printing on rank 0 only."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def start(distributed: Optional[bool] = None, device: str = "auto") -> DistributedRun:
    """Join the training run this process belongs to.

    ``distributed``: ``None`` joins when torchrun started more than one process (``WORLD_SIZE`` > 1)
    and trains alone otherwise; ``True`` requires torchrun's environment (an error that says how to
    launch when it is missing); ``False`` trains alone whatever the environment says. A process
    group the caller initialised already is used as it is and left open.
    """
    torch_device = resolve_device(device)
    if distributed is False:
        return DistributedRun(torch_device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return _joined(torch_device, torch.distributed.get_backend(), owns_group=False)
    environment = launch_environment()
    if environment is None:
        if distributed:
            raise DistributedError(f"distributed training needs the environment torchrun sets "
                                   f"({', '.join(TORCHRUN_VARIABLES)}); {LAUNCH_HINT}")
        return DistributedRun(torch_device)
    world_size = int(environment["WORLD_SIZE"])
    if world_size < 2:
        return DistributedRun(torch_device)
    if not torch.distributed.is_available():
        raise DistributedError(f"this PyTorch ({torch.__version__}) was built without torch.distributed")
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    local_rank = int(environment["LOCAL_RANK"])
    if backend == "nccl":
        torch_device = _local_cuda(local_rank)
        torch.cuda.set_device(torch_device)
    elif not torch.distributed.is_gloo_available():
        raise DistributedError("training on CPUs over several processes needs the Gloo backend, "
                               f"which this PyTorch ({torch.__version__}) lacks")
    try:
        torch.distributed.init_process_group(backend, init_method="env://")
    except (RuntimeError, ValueError) as exc:
        where = f"{environment['MASTER_ADDR']}:{environment['MASTER_PORT']}"
        raise DistributedError(f"could not join the {backend} process group at {where} as rank "
                               f"{environment['RANK']} of {world_size}: {exc}") from None
    return _joined(torch_device, backend, owns_group=True)


def _joined(device: torch.device, backend: str, owns_group: bool) -> DistributedRun:
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if backend == "nccl" and device.type == "cuda":
        device = _local_cuda(local_rank)
        torch.cuda.set_device(device)
    return DistributedRun(device, rank, world_size, local_rank, backend, owns_group)


def _local_cuda(local_rank: int) -> torch.device:
    if local_rank >= torch.cuda.device_count():
        raise DeviceError(f"process of local rank {local_rank} has no GPU of its own: {torch.cuda.device_count()} "
                          "visible; start at most one process per GPU (torchrun --nproc-per-node)")
    return torch.device("cuda", local_rank)


def volume_shares(n_volumes: int, world_size: int, seed: int, epoch: int) -> List[np.ndarray]:
    """Which training volumes each rank trains on in ``epoch``: rank ``r`` gets ``shares[r]``.

    The volumes are shuffled from ``(seed, epoch)`` as :class:`torch.utils.data.DistributedSampler`
    shuffles a dataset (seed + epoch, as its ``set_epoch`` does) and dealt out in turn, so each
    epoch the shares are disjoint, cover every volume, and change. Unlike the sampler, a volume is
    never repeated to even out the shares: :func:`rank_slices` evens out the slices instead. Only
    with fewer volumes than ranks do ranks share a volume.
    """
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n_volumes, generator=generator).numpy()
    if n_volumes < world_size:
        return [order[[rank % n_volumes]] for rank in range(world_size)]
    return [np.sort(order[rank::world_size]) for rank in range(world_size)]


def rank_slices(owners: np.ndarray, world_size: int, rank: int, seed: int, epoch: int) -> np.ndarray:
    """Indices of the slices (whose volume index is ``owners``) that ``rank`` trains on in ``epoch``.

    The slices of the rank's volumes (see :func:`volume_shares`), repeated from the start up to the
    longest share's count, so that every rank runs the same number of steps (DDP needs each step
    on every rank).
    """
    volumes = np.unique(owners)
    shares = [np.flatnonzero(np.isin(owners, volumes[share]))
              for share in volume_shares(len(volumes), world_size, seed, epoch)]
    longest = max(len(share) for share in shares)
    return np.resize(shares[rank], longest)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s augmentation, latent sampling and shuffling for an epoch seeded ``seed``.

    Rank 0 keeps ``seed`` (a one-process run draws exactly as before); other ranks draw their own streams.
    """
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])

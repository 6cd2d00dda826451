"""Training a model on normal volumes, then calibrating its thresholds on held-out normal volumes.

Volumes, not slices, are split into training and validation sets, so no validation slice has a
neighbour in the training set. Every epoch reseeds the shuffling, augmentation and latent
sampling from ``(seed, epoch)``, which makes a run deterministic and lets ``resume`` continue a
stopped run exactly: the checkpoint beside the output holds the weights, the optimiser and the best
weights so far. The model file itself is written once, complete with its calibration.

Under torchrun the same call trains on several processes with DDP (see :mod:`.distributed`): each
epoch every rank trains on the slices of its share of the training volumes, the gradients are
averaged, and rank 0 alone writes the checkpoint, calibrates and writes the model file, whose card
it then hands to the other ranks, so every rank returns the same model. The checkpoint holds the
plain network and optimiser state, so a run resumes with any number of processes.
"""

from __future__ import annotations

import copy
import datetime
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from monai.data import DataLoader

from ..atomic import atomic_output
from ..errors import DistributedError, ModelError
from ..models import Model, build_model, make_card, negative_elbo, save_model
from ..postprocessing import postprocessing_settings
from ..progress import CancelCheck, Progress, ProgressCallback
from .augmentation import augmentation_settings, make_augmentation, no_augmentation
from .calibration import DEFAULT_PERCENTILE, calibrate
from .dataset import SliceDataset, VolumeInput, extract_slices, volume_name
from .denoising import coarse_noise, denoising_settings
from .distributed import DistributedRun, rank_seed, rank_slices, start

PathLike = Union[str, "os.PathLike[str]"]


def checkpoint_path(output: PathLike) -> Path:
    """Where the resumable training state of ``output`` lives (``M.pt`` -> ``M.pt.ckpt``)."""
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def split_volumes(n: int, val_fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Seeded split of volume indices into training and validation (empty validation for one volume)."""
    if n < 2 or val_fraction <= 0:
        return list(range(n)), []
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    return sorted(order[n_val:]), sorted(order[:n_val])


def train(
    normal_volumes: Sequence[VolumeInput],
    output: Optional[PathLike] = None,
    arch: str = "vae",
    size: int = 128,
    latent_dim: Optional[int] = None,
    beta: float = 1.0,
    channels: Sequence[int] = (32, 64, 128, 128),
    norm: str = "instance",
    slice_axis: str = "axial",
    context_slices: int = 0,
    foreground: str = "otsu",
    template: Optional[Mapping[str, Any]] = None,
    epochs: int = 20,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    workers: int = 0,
    augmentation: Optional[Mapping[str, Any]] = None,
    denoising: Optional[Mapping[str, Any]] = None,
    calibration_volumes: Optional[Sequence[VolumeInput]] = None,
    percentile: float = DEFAULT_PERCENTILE,
    postprocessing: Optional[Mapping[str, Any]] = None,
    resume: bool = False,
    name: Optional[str] = None,
    description: str = "",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    distributed: Optional[bool] = None,
) -> Model:
    """Train a model on ``normal_volumes`` (images or paths), calibrate it, and save it to ``output``.

    Thresholds are calibrated on ``calibration_volumes``, else on the validation volumes; with a
    single volume, on that volume itself (the card says so). ``template`` (a card template entry,
    see :func:`~AnomalyDetectionLib.preprocessing.template_entry`) trains in template space: every
    volume is registered to the template first, as at detection time. ``workers`` processes
    augment slices in parallel (augmentation, not the network, limits a GPU). ``denoising``
    (settings of :mod:`~.denoising`, ``{}`` for the defaults) trains a denoising model: each slice
    is corrupted with coarse noise and the loss compares the decoding with the clean slice
    (Kascenas et al. 2022); ``None`` trains a plain one. ``context_slices`` neighbours on either side
    of each slice are the network's extra input channels (2.5D, see :mod:`~AnomalyDetectionLib.models.networks`).
    Returns the trained model.

    ``distributed``: ``None`` trains with DDP when torchrun started several processes (``WORLD_SIZE``
    > 1) and alone otherwise; ``True`` requires torchrun's environment; ``False`` never joins a group
    (see :func:`.distributed.start`). With DDP ``batch_size`` is per process, the checkpoint and
    ``output`` are written by rank 0 only, and ``progress``/``cancel`` run on every rank: a cancel
    must answer alike on all of them (e.g. from the progress messages), or the others wait for the
    one that stopped.
    """
    if not normal_volumes:
        raise ValueError("training needs at least one normal volume")
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError("epochs and batch size must be at least 1 and the learning rate positive")
    steps = Progress(progress, cancel)
    aug = augmentation_settings(augmentation)
    noise = denoising_settings(denoising) if denoising is not None else None
    with start(distributed, device) as run:
        torch_device = run.device
        card = make_card(arch=arch, size=size, latent_dim=latent_dim, channels=channels, beta=beta, norm=norm,
                         slice_axis=slice_axis, context_slices=context_slices, foreground=foreground, template=template,
                         name=name or (Path(output).stem if output else f"{arch}-{size}"), description=description)
        if postprocessing:
            card["postprocessing"] = postprocessing_settings({}, postprocessing)

        train_idx, val_idx = split_volumes(len(normal_volumes), val_fraction, seed)
        slices, owners = extract_slices(normal_volumes, card, steps.sub(0.0, 0.05))
        if val_idx:
            is_val = np.isin(owners, val_idx)
        else:  # one volume: every fifth slice validates, interleaved so it spans the anatomy
            is_val = np.arange(len(slices)) % 5 == 4
        train_slices, val_slices = slices[~is_val], slices[is_val]
        if len(train_slices) == 0 or len(val_slices) == 0:
            raise ValueError(f"too few slices with foreground to train ({len(slices)} found)")

        torch.manual_seed(seed)  # the initial weights are part of what the seed fixes
        model = build_model(card).to(torch_device)
        ckpt = checkpoint_path(output) if output else None
        started = time.perf_counter()
        best_val, history = fit_network(model, train_slices, val_slices, epochs=epochs, batch_size=batch_size,
                                        learning_rate=learning_rate, seed=seed, augmentation=aug, denoising=noise,
                                        workers=workers, checkpoint=ckpt, resume=resume,
                                        progress=steps.sub(0.05, 0.85), train_owners=owners[~is_val], run=run)

        model.network.eval()
        if calibration_volumes:
            calibration_set, calibration_source = list(calibration_volumes), "given calibration volumes"
        elif val_idx:
            calibration_set, calibration_source = [normal_volumes[i] for i in val_idx], "held-out validation volumes"
        else:
            calibration_set, calibration_source = list(normal_volumes), "the training volume (no held-out volume)"
        if run.is_main:  # rank 0 calibrates and writes; the others wait for its card
            try:
                calibrate(model, calibration_set, percentile, batch_size=batch_size, device=str(torch_device),
                          seed=seed, progress=steps.sub(0.85, 1.0).as_callback(), cancel=cancel)
                model.card["calibration"]["source"] = calibration_source
                model.card["training"] = {
                    "volumes": [volume_name(normal_volumes[i], i) for i in train_idx],
                    "validation_volumes": [volume_name(normal_volumes[i], i) for i in val_idx],
                    "train_slices": int(len(train_slices)),
                    "validation_slices": int(len(val_slices)),
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "learning_rate": learning_rate,
                    "optimizer": "Adam",
                    "seed": seed,
                    "workers": workers,
                    "world_size": run.world_size,
                    "backend": run.backend,
                    "augmentation": aug,
                    "denoising": noise,
                    "best_validation_loss": best_val,
                    "history": history,
                    "device": str(torch_device),
                    "duration_s": round(time.perf_counter() - started, 1),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "data": description,
                }
                if output:
                    save_model(model, output)
                    if ckpt is not None and ckpt.exists():
                        ckpt.unlink()
            except Exception as exc:
                run.broadcast(f"rank 0 stopped after training ({type(exc).__name__}: {exc})")
                raise
        card = run.broadcast(model.card)
        if isinstance(card, str):
            raise DistributedError(card)
        model.card = card
        if output:
            model.path = Path(output)
        return model


def fit_network(
    model: Model,
    train_slices: np.ndarray,
    val_slices: np.ndarray,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    augmentation: Optional[Mapping[str, Any]] = None,
    denoising: Optional[Mapping[str, Any]] = None,
    workers: int = 0,
    checkpoint: Optional[Path] = None,
    resume: bool = False,
    progress: Optional[Progress] = None,
    train_owners: Optional[np.ndarray] = None,
    run: Optional[DistributedRun] = None,
) -> Tuple[float, List[Dict[str, float]]]:
    """Fit ``model``'s network to normal ``train_slices`` ``(n, c, size, size)`` in [0, 1] with Adam (c: 1,
    or a slice and its context slices).

    The one training loop of the engine: :func:`train` runs it on slices of volumes, the paper
    experiments on 2D images. The network ends with the weights of the best validation loss.
    Returns ``(best validation loss, history)``. ``augmentation`` is a settings dict (see
    :func:`~.augmentation.augmentation_settings`; ``None`` means no augmentation). ``denoising``
    (see :func:`~.denoising.denoising_settings`; ``None``: plain training) corrupts every batch
    after augmentation with coarse noise and fits the clean slice; the validation loss then scores
    the denoising of validation slices under noise drawn from a fixed seed, so epochs compare alike.

    ``run`` (see :mod:`.distributed`; default one process) trains with DDP: each epoch a rank fits
    the slices of its share of the volumes ``train_owners`` names (the volume index of each slice;
    ``None``: each slice is its own), with its own augmentation and latent draws; the validation
    batches are shared out and their losses summed over the ranks, so every rank picks the same
    best epoch and ends with the same weights. Only rank 0 writes ``checkpoint``.
    """
    steps = progress or Progress()
    device = model.device
    run = run or DistributedRun(device)
    size = int(train_slices.shape[-1])
    aug = augmentation_settings(augmentation) if augmentation is not None else no_augmentation()
    noise = denoising_settings(denoising) if denoising is not None else None
    optimiser = torch.optim.Adam(model.network.parameters(), lr=learning_rate)
    # what else a resumed run must share with the stopped one (the number of workers and of epochs may change)
    settings = {"seed": seed, "batch_size": batch_size, "learning_rate": learning_rate}
    history: List[Dict[str, float]] = []
    best_val, best_state, first_epoch = float("inf"), None, 0
    if resume and checkpoint is not None and checkpoint.exists():
        first_epoch, best_val, best_state, history = _load_checkpoint(checkpoint, model, optimiser, model.card, noise,
                                                                      settings)
    trainer: torch.nn.Module = _TrainingLoss(model.network, noise)
    if run.is_distributed:  # averages the gradients over the ranks in backward()
        trainer = torch.nn.parallel.DistributedDataParallel(
            trainer, device_ids=[device.index] if device.type == "cuda" else None)
        owners = np.arange(len(train_slices)) if train_owners is None else np.asarray(train_owners)
    for epoch in range(first_epoch, epochs):
        epoch_seed = rank_seed(seed * 100_003 + epoch, run.rank)
        torch.manual_seed(epoch_seed)
        transform = make_augmentation(aug, size, epoch_seed)
        dataset: torch.utils.data.Dataset = SliceDataset(train_slices, transform)
        if run.is_distributed:
            mine = rank_slices(owners, run.world_size, run.rank, seed, epoch)
            dataset = torch.utils.data.Subset(dataset, mine.tolist())
        # MONAI's loader reseeds the augmentation in each worker from the generator, so a run
        # with the same number of workers is reproducible and workers do not repeat draws.
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(epoch_seed))
        trainer.train()
        losses: List[float] = []
        corruption = torch.Generator().manual_seed(epoch_seed + 1)
        for step, batch in enumerate(loader):
            steps.report((epoch + step / len(loader)) / epochs,
                         f"epoch {epoch + 1}/{epochs}" + (f", loss {np.mean(losses):.2f}" if losses else ""))
            loss = trainer(batch.to(device), corruption).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        val_sum, val_count = _validation_sums(model, val_slices, batch_size, device, noise, seed, run)
        train_sum, train_count, val_sum, val_count = run.sum([float(np.sum(losses)), len(losses), val_sum, val_count])
        val_loss = val_sum / val_count
        history.append({"epoch": epoch + 1, "train_loss": train_sum / train_count, "val_loss": val_loss,
                        "world_size": run.world_size})
        if val_loss < best_val:
            best_val, best_state = val_loss, copy.deepcopy(model.network.state_dict())
        if checkpoint is not None and run.is_main:
            _save_checkpoint(checkpoint, epoch + 1, model, optimiser, best_val, best_state, history, noise, settings)
    steps.report(1.0, f"trained, best validation loss {best_val:.2f}")
    if best_state is not None:
        model.network.load_state_dict(best_state)
    model.network.eval()
    return best_val, history


class _TrainingLoss(torch.nn.Module):
    """The per-slice training loss as a module's forward: the call DDP wraps to share the gradients."""

    def __init__(self, network: torch.nn.Module, noise: Optional[Mapping[str, Any]]) -> None:
        super().__init__()
        self.network = network
        self.noise = noise

    def forward(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _loss(self.network, clean, self.noise, generator, sample=True)


def _loss(network: torch.nn.Module, clean: torch.Tensor, noise: Optional[Mapping[str, Any]],
          generator: torch.Generator, sample: bool) -> torch.Tensor:
    """Per-slice loss: the negative ELBO of ``clean``, or of its denoising when ``noise`` is set."""
    if noise is None:
        return negative_elbo(network, clean, sample=sample)
    corrupted = coarse_noise(clean, noise["std"], noise["grid_px"], generator)
    return negative_elbo(network, corrupted, sample=sample, target=clean)


@torch.no_grad()
def _validation_sums(model: Model, slices: np.ndarray, batch_size: int, device: torch.device,
                     noise: Optional[Mapping[str, Any]], seed: int, run: DistributedRun) -> Tuple[float, int]:
    """Summed validation loss and slice count of this rank's validation batches (every ``world_size``-th).

    The denoising noise of a batch is drawn from ``(seed, batch)``, so the sum over the ranks is the
    same whatever the number of ranks.
    """
    model.network.eval()
    total, count = 0.0, 0
    starts = range(0, len(slices), batch_size)
    for index in range(run.rank, len(starts), run.world_size):
        batch = torch.from_numpy(slices[starts[index]:starts[index] + batch_size]).to(device)
        corruption = torch.Generator().manual_seed(seed + 1_000_003 * index)
        total += float(_loss(model.network, batch, noise, corruption, sample=False).sum())
        count += len(batch)
    return total, count


def _save_checkpoint(path: Path, epoch: int, model: Model, optimiser: torch.optim.Optimizer, best_val: float,
                     best_state: Optional[Dict[str, torch.Tensor]], history: List[Dict[str, float]],
                     noise: Optional[Mapping[str, Any]] = None, settings: Optional[Mapping[str, Any]] = None) -> None:
    with atomic_output(path) as tmp:
        torch.save({"epoch": epoch, "card": model.card, "network": model.network.state_dict(),
                    "optimizer": optimiser.state_dict(), "best_val": best_val, "best_state": best_state,
                    "history": history, "denoising": dict(noise) if noise else None,
                    "settings": dict(settings or {})}, tmp)


def _load_checkpoint(path: Path, model: Model, optimiser: torch.optim.Optimizer, card: Mapping[str, Any],
                     noise: Optional[Mapping[str, Any]] = None, settings: Optional[Mapping[str, Any]] = None
                     ) -> Tuple[int, float, Optional[Dict[str, torch.Tensor]], List[Dict[str, float]]]:
    """Restore a stopped run, refusing a checkpoint of another recipe: network, data (the card's
    description, which says what the volumes were), denoising, seed, batch size or learning rate.
    Checkpoints written before a setting was recorded are not judged on it."""
    state = torch.load(str(path), map_location=model.device, weights_only=True)
    # card keys that a checkpoint of an older engine may lack, with the value their absence meant
    absent = {"context_slices": 0}
    keys = ("arch", "size", "latent_dim", "channels", "beta", "slice_axis", "context_slices", "foreground",
            "description")
    different = [k for k in keys if state["card"].get(k, absent.get(k)) != card.get(k, absent.get(k))]
    saved = state.get("settings") or {}
    different += [k for k, v in (settings or {}).items() if k in saved and saved[k] != v]
    if state.get("denoising") != (dict(noise) if noise else None):
        different.append("denoising")
    if different:
        raise ModelError(f"{path}: checkpoint was trained with other settings ({', '.join(different)}); "
                         "delete it or train without --resume")
    model.network.load_state_dict(state["network"])
    optimiser.load_state_dict(state["optimizer"])
    return int(state["epoch"]), float(state["best_val"]), state["best_state"], list(state["history"])

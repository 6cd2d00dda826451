"""Distributed training: two CPU processes with Gloo train one model, as torchrun starts them.

The processes are started the way torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT in each one's environment), by ``torch.multiprocessing.spawn`` for the Python API, and
by torchrun itself (``python -m torch.distributed.run``) for the command line as users run it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.multiprocessing as mp

from AnomalyDetectionLib import Cancelled, Detector, load_model, train
from AnomalyDetectionLib.cli import main
from AnomalyDetectionLib.errors import DistributedError
from AnomalyDetectionLib.training import checkpoint_path
from AnomalyDetectionLib.training.distributed import TORCHRUN_VARIABLES, rank_seed, rank_slices, volume_shares
from conftest import TINY, array

SETTINGS = dict(TINY, size=32, channels=(8, 16), latent_dim=8, epochs=2)
CLI_SETTINGS = ["--size", "32", "--channels", "8,16", "--latent", "8", "--epochs", "2", "--batch-size", "16",
                "--lr", "2e-3", "--device", "cpu", "--seed", "0", "--quiet"]


def _rank_main(rank: int, world_size: int, ports: List[int], volumes: List[str], output: str, report: str) -> None:
    """One process of the run: torchrun's environment, then the plain ``train`` call, twice (spawned: module level).

    Rank 0 keeps a copy of the checkpoint after the first epoch (for the resume test); each rank
    saves the weights and the card that each ``train`` returned. Each run rendezvouses on its own
    port: on the same port, a rank that leaves the first group early can reach rank 0's old store
    before rank 0 has closed it, read the first run's addresses and wait on them for half an hour.
    """
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)  # as torchrun does (OMP_NUM_THREADS=1): two processes on two cores
    kept = Path(report, "epoch1.ckpt")

    def keep_first_checkpoint(fraction: float, message: str) -> None:
        if rank == 0 and message.startswith("epoch 2/") and not kept.exists():
            shutil.copyfile(checkpoint_path(output), kept)

    for run, port in zip(("first", "again"), ports):  # the second run, without output: same seed, same model
        os.environ["MASTER_PORT"] = str(port)
        model = train(volumes, output if run == "first" else None, distributed=True, progress=keep_first_checkpoint,
                      **SETTINGS)
        torch.save({"state": model.network.state_dict(), "card": model.card}, Path(report, f"{run}{rank}.pt"))


def free_ports(count: int) -> List[int]:
    """``count`` distinct free ports (held open together while they are picked, so none repeats)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def spawn_two(volumes: List[str], output: Path, report: Path, limit_s: float = 600) -> None:
    """Both ranks' runs; a hang fails the test after ``limit_s`` instead of Gloo's 30-minute timeout."""
    report.mkdir(parents=True, exist_ok=True)
    context = mp.start_processes(_rank_main, args=(2, free_ports(2), volumes, str(output), str(report)),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + limit_s
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the two training processes did not finish within {limit_s:.0f} s")


def weights_of(state: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
    return [state[k] for k in sorted(state)]


@pytest.fixture(scope="module")
def volume_files(normal_volumes, tmp_path_factory) -> List[str]:
    folder = tmp_path_factory.mktemp("normals")
    paths = []
    for index, volume in enumerate(normal_volumes[:3]):
        path = folder / f"normal{index}.nii.gz"
        sitk.WriteImage(volume, str(path))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def two_process_run(volume_files, tmp_path_factory) -> Path:
    """A whole run on two processes: the output folder holds the model, ``ranks/`` what each rank returned."""
    folder = tmp_path_factory.mktemp("ddp")
    spawn_two(volume_files, folder / "out" / "model.pt", folder / "ranks")
    return folder


def test_each_epoch_deals_whole_volumes_to_the_ranks() -> None:
    owners = np.repeat(np.arange(5), [10, 12, 9, 11, 10])
    dealt = []
    for epoch in range(3):
        shares = volume_shares(5, 2, seed=0, epoch=epoch)
        assert not set(shares[0]) & set(shares[1]) and sorted(np.concatenate(shares)) == list(range(5))
        slices = [rank_slices(owners, 2, rank, seed=0, epoch=epoch) for rank in range(2)]
        assert len(slices[0]) == len(slices[1])  # DDP needs the same number of steps on every rank
        for rank in range(2):  # a rank trains on every slice of its volumes, and only on those
            assert set(owners[slices[rank]]) == set(shares[rank])
            assert set(slices[rank]) == set(np.flatnonzero(np.isin(owners, shares[rank])))
        dealt.append(tuple(shares[0]))
    assert len(set(dealt)) > 1  # reshuffled per epoch
    assert [list(s) for s in volume_shares(1, 2, seed=0, epoch=0)] == [[0], [0]]  # fewer volumes than ranks
    assert rank_seed(7, 0) == 7 and rank_seed(7, 1) not in (7, rank_seed(7, 2))


def test_two_gloo_processes_end_with_identical_weights_and_one_model_file(two_process_run, volume_files,
                                                                         normal_volumes, tmp_path) -> None:
    ranks = [torch.load(str(two_process_run / "ranks" / f"first{r}.pt"), weights_only=True) for r in range(2)]
    for a, b in zip(weights_of(ranks[0]["state"]), weights_of(ranks[1]["state"])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert ranks[0]["card"] == ranks[1]["card"]  # rank 1 returns rank 0's calibrated card
    again = torch.load(str(two_process_run / "ranks" / "again1.pt"), weights_only=True)
    for a, b in zip(weights_of(again["state"]), weights_of(ranks[1]["state"])):  # same seed, same model
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    model = load_model(two_process_run / "out" / "model.pt")
    for a, b in zip(weights_of(model.network.state_dict()), weights_of(ranks[0]["state"])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    training = model.card["training"]
    assert training["world_size"] == 2 and training["backend"] == "gloo"
    assert [h["world_size"] for h in training["history"]] == [2, 2]
    assert model.card["calibration"]["thresholds"] == ranks[1]["card"]["calibration"]["thresholds"]

    # the same files as one process writes (one model, no checkpoint or temporary file left), another model
    alone = train(volume_files, tmp_path / "model.pt", **SETTINGS)
    assert sorted(p.name for p in (two_process_run / "out").iterdir()) == sorted(p.name for p in tmp_path.iterdir())
    assert alone.card["training"]["world_size"] == 1 and alone.card["training"]["backend"] is None
    assert any(not torch.equal(a, b) for a, b in zip(weights_of(alone.network.state_dict()),
                                                      weights_of(ranks[0]["state"])))

    result = Detector(model, score="reconstruction", device="cpu").detect(normal_volumes[4])
    assert result.anomaly_map.GetSize() == normal_volumes[4].GetSize()
    assert np.isfinite(array(result.anomaly_map)).all() and result.report["threshold"] > 0


def test_a_run_of_two_processes_resumes_on_one(two_process_run, volume_files, tmp_path) -> None:
    output = tmp_path / "model.pt"
    shutil.copyfile(two_process_run / "ranks" / "epoch1.ckpt", checkpoint_path(output))  # stopped after epoch 1
    state = torch.load(str(checkpoint_path(output)), weights_only=True)
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["network"])  # the plain network

    resumed = train(volume_files, output, resume=True, **SETTINGS)
    history = resumed.card["training"]["history"]
    assert [(h["epoch"], h["world_size"]) for h in history] == [(1, 2), (2, 1)]
    whole = load_model(two_process_run / "out" / "model.pt").card["training"]["history"]
    assert history[0] == whole[0] and history[1] != whole[1]
    assert resumed.card["training"]["world_size"] == 1
    assert not checkpoint_path(output).exists()
    assert load_model(output).card["training"]["history"] == history


def test_torchrun_runs_the_command_line_and_resumes_a_one_process_run_on_two(volume_files, normal_volumes,
                                                                             tmp_path) -> None:
    output = tmp_path / "model.pt"
    messages: List[str] = []
    with pytest.raises(Cancelled):
        train(volume_files, output, progress=lambda f, m: messages.append(m),
              cancel=lambda: any(m.startswith("epoch 2/") for m in messages), **SETTINGS)
    assert checkpoint_path(output).exists()
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_ports(1)[0]), "-m", "AnomalyDetectionLib.cli", "train", *volume_files,
               "-o", str(output), "--resume", "--distributed", *CLI_SETTINGS]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("by 2 processes") == 1, done.stdout  # rank 0 alone reports
    model = load_model(output)
    assert [(h["epoch"], h["world_size"]) for h in model.card["training"]["history"]] == [(1, 1), (2, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert Detector(model, device="cpu").detect(normal_volumes[4]).mask.GetSize() == normal_volumes[4].GetSize()


def test_distributed_without_torchrun_says_how_to_launch(monkeypatch, capsys, normal_volumes, tmp_path) -> None:
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert main(["train", "normal.nii.gz", "-o", str(tmp_path / "m.pt"), "--distributed"]) == 2
    error = capsys.readouterr().err
    assert "torchrun --nproc-per-node" in error and "WORLD_SIZE" in error
    with pytest.raises(DistributedError, match="torchrun"):
        train(normal_volumes[:1], None, distributed=True, **SETTINGS)
    monkeypatch.setenv("WORLD_SIZE", "2")  # half a torchrun environment is named, not guessed at
    with pytest.raises(DistributedError, match="MASTER_ADDR"):
        train(normal_volumes[:1], None, **SETTINGS)
    assert not list(tmp_path.iterdir())

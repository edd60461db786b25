"""Data-parallel training: 2 CPU processes (gloo, under torchrun) against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agemetric import distributed

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="250")
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out = {}
    for name, prefix in (("one", [sys.executable]), ("two", _torchrun(2))):
        done = _run([*prefix, str(WORKER), str(tmp / f"{name}.pt")], tmp)
        assert done.returncode == 0, done.stderr[-3000:]
        out[name] = torch.load(tmp / f"{name}.pt", weights_only=False)
    return out


def test_two_processes_give_the_single_process_loss(results):
    for part in ("loss", "age", "gender"):
        torch.testing.assert_close(results["two"]["loss"][part], results["one"]["loss"][part], rtol=1e-5, atol=1e-5)


def test_two_processes_give_the_single_process_gradients(results):
    one, two = results["one"]["grads"], results["two"]["grads"]
    assert one.keys() == two.keys()
    assert "loss.scale" in one and "gender_loss.scale" in one  # parameters after the gather, too
    for name in one:
        assert one[name].abs().sum() > 0, name  # every parameter takes part
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)


def test_two_processes_train_to_the_single_process_weights(results):
    one, two = results["one"], results["two"]
    assert [h["images"] for h in two["history"]] == [h["images"] for h in one["history"]] == [25, 25, 25]
    for name, value in one["params"].items():
        torch.testing.assert_close(two["params"][name], value, rtol=1e-3, atol=1e-4, msg=name)
    assert not torch.equal(one["params"]["loss.scale"], torch.tensor(1.5))  # it trained


def test_world_share_keeps_the_batch_order():
    index = torch.tensor([7, 3, 9, 1, 4])
    shares = [distributed.World(rank, 2).share(index) for rank in range(2)]
    assert torch.cat([s for s, _ in shares]).tolist() == index.tolist()
    assert shares[0][1] == shares[1][1] == [3, 2]


def test_one_process_is_untouched():
    world = distributed.World()
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather(x, [3], world) is x
    assert distributed.any_rank([True, False], world) == [True, False]


def test_agemetric_run_under_torchrun(tmp_path):
    """The whole command under torchrun: rank 0 writes the run folder; the other process writes nothing.

    The time budget ends training long before 50 epochs: both processes must stop at the same step
    (one waiting in all_gather for the other would hang until the timeout).
    """
    options = (
        "--epochs 50 --set time_budget=2 --limit 80 --image-size 32 --batch-size 16 --out ddp-run "
        "--set figures=false --set device=cpu --set backbone_options.width=8"
    )
    done = _run([*_torchrun(2), "-m", "agemetric", "run", *options.split()], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp-run"]
    metrics = json.loads((tmp_path / "ddp-run" / "metrics.json").read_text())
    assert 0 < metrics["training_images_seen"] < 50 * 64
    assert "2 processes" in done.stdout
    assert done.stdout.count("Run folder:") == 1  # rank 1 reports nothing


def test_devices():
    assert distributed.resolve_device("cpu", distributed.World(1, 2, 1)) == torch.device("cpu")
    assert distributed.resolve_device("cuda", distributed.World(1, 2, 1)) == torch.device("cuda:1")
    assert distributed.resolve_device("cuda:3", distributed.World()) == torch.device("cuda:3")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert distributed.resolve_device("auto", distributed.World()).type == expected


def test_a_bad_device_is_a_one_line_error():
    from agemetric.config import RunConfig
    from agemetric.errors import AgemetricError

    with pytest.raises(AgemetricError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        RunConfig.from_flat(device="gpu")

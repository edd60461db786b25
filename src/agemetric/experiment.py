"""A whole run: data -> split -> train -> gallery -> evaluation -> run folder.

``agemetric run`` is a thin layer over :func:`run`; other projects can call it directly.
"""

from __future__ import annotations

import csv
import json
import platform
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import tomli_w
import torch

from agemetric import plugins
from agemetric.config import RunConfig
from agemetric.data.arrays import FaceArrays, decode
from agemetric.data.splits import random_split
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.interfaces import FaceDataset
from agemetric.metrics import summarise
from agemetric.training import train


@dataclass
class RunResult:
    """What :func:`run` produced."""

    run_dir: Path
    metrics: dict
    estimator: AgeEstimator
    history: list[dict]


def prepare_run_dir(config: RunConfig) -> Path:
    """Create the run folder now, so an unwritable path fails before any training."""
    if config.out is not None:
        run_dir = Path(config.out)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{stamp}-{config.dataset}-{config.backbone}"
    if (run_dir / "metrics.json").exists() or (run_dir / "model.pt").exists():
        raise AgemetricError(f"--out: {run_dir} already holds a run; choose another folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise AgemetricError(f"--out: cannot write to {str(run_dir)!r}: {exc.strerror or exc}") from None
    return run_dir


def load_data(config: RunConfig, progress=None, console=None) -> tuple[FaceDataset, FaceArrays]:
    """Create the dataset plugin, pick ``limit`` records and decode them at ``image_size``."""
    dataset = plugins.create("dataset", config.dataset, root=config.data_dir, **config.dataset_options)
    records = dataset.records()
    if config.limit is not None and config.limit < len(records):
        pick = torch.randperm(len(records), generator=torch.Generator().manual_seed(config.seed))
        records = [records[i] for i in sorted(pick[: config.limit].tolist())]
    if len(records) < 2:
        where = f" in {dataset.root}" if dataset.root else ""
        raise AgemetricError(
            f"--dataset {config.dataset}: found {len(records)} usable image(s){where}; need at least 2"
            + (f" ({dataset.skipped.summary()})" if len(dataset.skipped) else "")
        )
    arrays = decode(dataset, records, config.image_size, progress=add_bar(progress, "decode", len(records)))
    if len(arrays) < 2:
        raise AgemetricError(
            f"--dataset {config.dataset}: fewer than 2 images could be decoded ({dataset.skipped.summary()})"
        )
    return dataset, arrays


def run(config: RunConfig, progress=None, console=None) -> RunResult:
    """Train and evaluate one configuration and write its run folder.

    The run folder receives ``config.toml`` (resolved config, reusable with ``--config``),
    ``split.csv``, ``history.json``, ``model.pt`` (weights + gallery), ``predictions.csv`` and
    ``metrics.json``.

    Args:
        config: the run's config.
        progress: an optional ``rich.progress.Progress`` for the bars.
        console: an optional ``rich.console.Console`` for notes (skipped files, settings).
    """
    say = console.print if console is not None else (lambda *a, **k: None)
    run_dir = prepare_run_dir(config)
    (run_dir / "config.toml").write_text(tomli_w.dumps(config.to_dict()), encoding="utf-8")
    if config.threads:
        torch.set_num_threads(config.threads)

    t0 = time.perf_counter()
    dataset, data = load_data(config, progress)
    if len(dataset.skipped):
        say(f"[yellow]{dataset.describe()}: {dataset.skipped.summary()}[/]")
    train_idx, test_idx = random_split(len(data), config.test_fraction, config.seed)
    train_data, test_data = data.subset(train_idx), data.subset(test_idx)
    _write_split(run_dir / "split.csv", train_data.keys, test_data.keys)
    split = {
        "protocol": config.split,
        "test_fraction": config.test_fraction,
        "seed": config.seed,
        "n_train": len(train_data),
        "n_test": len(test_data),
    }

    multitask = {"on": True, "off": False, "auto": train_data.has_gender}[config.multitask]
    if multitask and not train_data.has_gender:
        raise AgemetricError(f"--set multitask=on: dataset {config.dataset!r} has no gender labels")
    torch.manual_seed(config.seed)
    estimator = AgeEstimator.from_config(config, multitask=multitask)
    say(
        f"{dataset.describe()}: {len(train_data)} train / {len(test_data)} test images "
        f"({config.split} split), {config.image_size} px, backbone {config.backbone}, loss {config.loss}, "
        f"multi-task {'on' if multitask else 'off'}, bf16 {'on' if estimator.bf16 else 'off'}"
    )

    t1 = time.perf_counter()
    history = train(estimator, train_data, config, progress)
    _write_json(run_dir / "history.json", history)
    t2 = time.perf_counter()

    advance = add_bar(progress, "embed", len(data))
    estimator.fit_gallery(train_data, progress=advance)
    estimator.save(run_dir / "model.pt")
    test_emb = estimator.embed(test_data.images, progress=advance)
    predicted = estimator.retriever.predict(test_emb)
    t3 = time.perf_counter()

    metrics = {
        **summarise(predicted, test_data.ages, train_data.ages),
        "split": split,
        "dataset": dataset.describe(),
        "multitask": multitask,
        "training_images_seen": sum(h["images"] for h in history),
        "seconds": {"load": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2},
        "machine": machine(),
    }
    if (test_data.genders >= 0).any() and train_data.has_gender:
        known = test_data.genders >= 0
        guessed = estimator.retriever.predict_gender(test_emb[known])
        metrics["gender_accuracy_from_age_embedding"] = 100.0 * float(
            (guessed == test_data.genders[known]).float().mean()
        )
    _write_predictions(run_dir / "predictions.csv", test_data, predicted)
    _write_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir, metrics, estimator, history)


def evaluate(
    estimator: AgeEstimator, data: FaceArrays, train_ages: torch.Tensor, progress=None
) -> tuple[dict, torch.Tensor]:
    """Metrics of ``estimator`` on ``data`` (its gallery must be fitted); returns (metrics, predictions)."""
    predicted = estimator.predict(data.images, progress=add_bar(progress, "predict", len(data)))
    return summarise(predicted, data.ages, train_ages), predicted


def add_bar(progress, description: str, total: int):
    """A new bar on ``progress`` and a callback advancing it by n; ``None`` without a progress."""
    if progress is None:
        return None
    task = progress.add_task(description, total=total, loss="", ips="")
    return lambda n: progress.advance(task, n)


def machine() -> dict:
    """Where the numbers were measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _write_split(path: Path, train_keys: list[str], test_keys: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "side"])
        w.writerows([k, "train"] for k in train_keys)
        w.writerows([k, "test"] for k in test_keys)


def _write_predictions(path: Path, data: FaceArrays, predicted: torch.Tensor) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "age", "predicted", "abs_error"])
        for key, age, pred in zip(data.keys, data.ages.tolist(), predicted.tolist(), strict=True):
            w.writerow([key, f"{age:g}", f"{pred:.2f}", f"{abs(pred - age):.2f}"])

"""A whole run: data -> split -> train -> gallery -> evaluation -> run folder.

``agemetric run`` is a thin layer over `run()`; other projects can call it directly.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import tomli_w
import torch

from agemetric import distributed, plugins
from agemetric.config import RunConfig, resolve
from agemetric.data.arrays import FaceArrays, decode
from agemetric.data.splits import Split, make_split, read_split, write_split
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator, build_parts
from agemetric.interfaces import FaceDataset, FaceRecord
from agemetric.metrics import summarise
from agemetric.reporting import SILENT, Reporter
from agemetric.runs import RunFolder
from agemetric.training import load_checkpoint, recalibrate_batchnorm, train


@dataclass
class RunResult:
    """What `run()` produced."""

    run_dir: Path
    metrics: dict
    estimator: AgeEstimator
    history: list[dict]


def select_records(config: RunConfig) -> tuple[FaceDataset, list[FaceRecord]]:
    """Create the dataset plugin and list its records (a seeded random ``limit`` of them)."""
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
    return dataset, records


def check_plugins(config: RunConfig) -> None:
    """Fail early, with the plugins' one-line errors: every name ``config`` gives must be installed,
    and the light parts (miner, loss, retriever, framer) must accept their options."""
    for kind, name in (("backbone", config.backbone), ("dataset", config.dataset)):
        plugins.get_entry(kind, name)
    build_parts(config, multitask=config.multitask != "off", backbone=False)
    make_framer(config)


def make_framer(config: RunConfig):
    """The run's face framer, by name."""
    return plugins.create("framer", config.framing, **config.framing_options)


def decode_records(
    dataset: FaceDataset, records: list[FaceRecord], config: RunConfig, reporter: Reporter = SILENT
) -> FaceArrays:
    """Decode ``records`` at the config's size and framing (through the disk cache when on);
    fewer than 2 readable images is an error."""
    arrays = decode(
        dataset,
        records,
        config.image_size,
        progress=reporter.bar("decode", len(records)),
        cache=config.cache,
        framer=make_framer(config),
    )
    if len(arrays) < 2:
        raise AgemetricError(
            f"{dataset.describe()}: fewer than 2 images could be decoded ({dataset.skipped.summary()})"
        )
    return arrays


def load_data(config: RunConfig, reporter: Reporter = SILENT) -> tuple[FaceDataset, FaceArrays]:
    """`select_records()` then `decode_records()`: the whole (limited) dataset as arrays."""
    dataset, records = select_records(config)
    return dataset, decode_records(dataset, records, config, reporter)


def split_records(
    dataset: FaceDataset, records: list[FaceRecord], config: RunConfig, reporter: Reporter = SILENT
) -> Split:
    """The run's split: ``config.split_file`` when given, else ``config.split`` over content hashes."""
    if config.split_file:
        return read_split(config.split_file, records)
    bar = reporter.bar("fingerprint", len(records))
    fingerprints = []
    for record in records:
        fingerprints.append(dataset.fingerprint(record))
        bar.advance(1)
    return make_split(records, fingerprints, config.split, config.test_fraction, config.seed)


def run(
    config: RunConfig,
    reporter: Reporter | None = None,
    resume: str | Path | None = None,
    snapshots: tuple[float, ...] = (),
) -> RunResult | None:
    """Train and evaluate one configuration and write its run folder.

    The run folder receives ``config.toml`` (resolved config, reusable with ``--config``),
    ``split.csv``, ``history.json``, ``model.pt`` (weights + gallery), ``predictions.csv`` and
    ``metrics.json``. While training, ``checkpoint.pt`` holds the state after the last finished
    epoch (or the step where Ctrl-C stopped it); it is removed when the run completes.

    Under ``torchrun`` (`agemetric.distributed`) every process loads the data and trains its
    share of each batch; rank 0 alone writes the run folder, evaluates and returns the result, the
    others return ``None`` once training ends.

    Args:
        config: the run's config.
        reporter: where the progress bars and notes (settings, skipped files) go
            ([`Reporter`][agemetric.reporting.Reporter]); ``None``: nowhere.
        resume: an unfinished run folder to continue from its ``checkpoint.pt``, with its own
            split; ``config`` must be that folder's ``config.toml`` (see `resume_config()`).
        snapshots: training times in seconds at which to evaluate the test split during
            training (a learning curve against the clock, ``metrics["snapshots"]``); evaluating
            is left out of the training time and the budget.
    """
    world = distributed.init_from_env(config.device)
    main = world.is_main
    reporter = reporter if reporter is not None and main else SILENT
    say = reporter.note
    check_plugins(config)  # a misspelt name or option fails at once, not after the data is decoded
    state = None
    if resume is not None:
        folder = RunFolder(resume)
        state = load_checkpoint(folder.checkpoint)
        config = dataclasses.replace(config, split_file=str(folder.split))
        say(f"resuming {folder.path} at epoch {state['epoch']}" + (" (mid-epoch)" if state["partial"] else ""))
    if config.threads:
        torch.set_num_threads(config.threads)

    t0 = time.perf_counter()
    dataset, records = select_records(config)  # a missing or empty data folder fails before any file is written
    if main and resume is None:
        folder = RunFolder.create(config.out, config.dataset, config.backbone)
        folder.config.write_text(tomli_w.dumps(config.to_dict()), encoding="utf-8")
    say(describe_run(config, distributed.resolve_device(config.device, world)))
    split = split_records(dataset, records, config, reporter)
    records = [r for r in records if r.key in split.side]
    if main and resume is None:
        write_split(folder.split, split, [r.key for r in records])
    data = decode_records(dataset, records, config, reporter)
    if len(dataset.skipped) and main:
        _write_skipped(folder.skipped, dataset.skipped.items)
        say(f"{dataset.describe()}: {dataset.skipped.summary()} (all of them in {folder.skipped})", warning=True)
    noted = data.noted()
    if noted and main:
        _write_skipped(folder.framing, noted, header=("item", "framing"))
        say(f"{fallback_summary(config, noted)} (all of them in {folder.framing})", warning=True)
    is_test = torch.tensor([split.side[k] == "test" for k in data.keys])  # (N,) bool
    train_data, test_data = (
        data.subset(torch.nonzero(~is_test).flatten()),
        data.subset(torch.nonzero(is_test).flatten()),
    )
    if len(train_data) < 2 or len(test_data) < 1:
        raise AgemetricError(
            f"after decoding, {len(train_data)} train / {len(test_data)} test images remain; need >= 2 / >= 1"
        )
    split_info = {**split.info, "n_train": len(train_data), "n_test": len(test_data)}

    multitask = {"on": True, "off": False, "auto": train_data.has_gender}[config.multitask]
    if multitask and not train_data.has_gender:
        raise AgemetricError(f"--set multitask=on: dataset {config.dataset!r} has no gender labels")
    torch.manual_seed(config.seed)
    estimator = AgeEstimator.from_config(config, multitask=multitask).to(
        distributed.resolve_device(config.device, world)
    )
    say(
        f"{dataset.describe()}: {len(train_data)} train / {len(test_data)} test images "
        f"({split_info['protocol']} split), {config.image_size} px, multi-task {'on' if multitask else 'off'}"
        + (f", {world.size} processes" if world.active else "")
    )

    t1 = time.perf_counter()
    checkpoint = folder.checkpoint if main else None
    curve: list[dict] = []
    on_step = _snapshot_taker(estimator, train_data, test_data, config, snapshots, curve) if snapshots else None
    history = train(
        estimator, train_data, config, reporter, world, checkpoint=checkpoint, resume=state, on_step=on_step
    )
    if not main:
        return None
    _write_json(folder.history, history)
    t2 = time.perf_counter()

    bar = reporter.bar("embed", len(data))
    estimator.fit_gallery(train_data, progress=bar)
    estimator.save(folder.model)
    test_emb = estimator.embed(test_data.images, progress=bar)
    predicted = estimator.retriever.predict(test_emb)
    t3 = time.perf_counter()

    metrics = {
        **summarise(predicted, test_data.ages, train_data.ages),
        "split": split_info,
        "dataset": dataset.describe(),
        "multitask": multitask,
        "training_images_seen": sum(h["images"] for h in history),
        "seconds": {"load": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2},
        "skipped": len(dataset.skipped),
        "framing_fallbacks": len(noted),
        **({"snapshots": curve} if snapshots else {}),
        "machine": machine(),
    }
    if (test_data.genders >= 0).any() and train_data.has_gender:
        metrics.update(gender_accuracies(estimator, train_data, test_data, test_emb))
    _write_predictions(folder.predictions, test_data, predicted)
    _write_json(folder.metrics, metrics)
    if config.figures:
        from agemetric.plots import write_run_figures

        write_run_figures(folder.path)
    checkpoint.unlink(missing_ok=True)  # the run is complete: model.pt holds what is needed
    return RunResult(folder.path, metrics, estimator, history)


def describe_run(config: RunConfig, device: torch.device) -> str:
    """The line a run starts with: what trains, how, and where."""
    from agemetric.estimator import bf16_supported

    bf16 = bf16_supported(device.type) if config.bf16 == "auto" else config.bf16 == "on"
    return (
        f"run: backbone {config.backbone} (weights {config.weights}), loss {config.loss} (margin {config.margin:g}), "
        f"miner {config.miner}, retriever {config.retriever} (k {config.k}); optimiser {config.optimizer} "
        f"(lr {config.lr:g}), batch {config.batch_size}, {config.epochs} epochs"
        + (f" or {config.time_budget:g} s" if config.time_budget else "")
        + f"; device {device}, bf16 {'on' if bf16 else 'off'}"
    )


def fallback_summary(config: RunConfig, noted: list[tuple[str, str]]) -> str:
    """``"framing dlib-align: 3 image(s) fell back, e.g. a.jpg (no face found: centre framing)"``."""
    return f"framing {config.framing}: {len(noted)} image(s) fell back, e.g. {noted[0][0]} ({noted[0][1]})"


def _snapshot_taker(estimator, train_data, test_data, config, times, curve):
    """An ``on_step`` for `train()` that evaluates a copy of the model at each of ``times``
    (seconds of training): BatchNorm recalibrated as at the end of training, gallery fitted, test
    split predicted; appends ``{mark, seconds, mae, cs5}`` to ``curve`` and returns the time it
    took. Training continues exactly as without snapshots (the global random state is restored)."""
    pending = sorted(times)

    def on_step(elapsed: float, current: AgeEstimator) -> float | None:
        if not pending or elapsed < pending[0]:
            return None
        began = time.perf_counter()
        mark = pending[0]
        while pending and elapsed >= pending[0]:
            pending.pop(0)
        rng = torch.get_rng_state()  # recalibration runs dropout: training must not see its draws
        snapshot = copy.deepcopy(current)
        if config.bn_recalibration:
            recalibrate_batchnorm(
                snapshot, train_data, config.bn_recalibration, config.batch_size, torch.Generator().manual_seed(0)
            )
        snapshot.fit_gallery(train_data)
        summary = summarise(snapshot.predict(test_data.images), test_data.ages, train_data.ages)
        curve.append({"mark": mark, "seconds": round(elapsed, 1), "mae": summary["mae"], "cs5": summary["cs"][5]})
        torch.set_rng_state(rng)
        estimator.train()
        return time.perf_counter() - began

    return on_step


def resume_config(run_dir: str | Path) -> RunConfig:
    """The config of an unfinished run folder, checked to be resumable (one-line errors)."""
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise AgemetricError(f"--resume: no run folder {str(folder.path)!r}")
    if folder.metrics.exists():
        raise AgemetricError(f"--resume: {folder.path} is a finished run (it has {folder.METRICS}); nothing to resume")
    if not folder.checkpoint.is_file():
        raise AgemetricError(
            f"--resume: {folder.path} has no {folder.CHECKPOINT} (a run writes one at the end of each epoch "
            "and on Ctrl-C; this one stopped before either)"
        )
    return resolve(config_file=folder.config)


def gender_accuracies(
    estimator: AgeEstimator, train_data: FaceArrays, test_data: FaceArrays, test_emb: torch.Tensor
) -> dict[str, float]:
    """Gender accuracy (%) of the majority of the k nearest training faces (paper, Table 2).

    In the age embedding always (gender was never a label of its loss); in the gender
    embedding too when the gender head was trained (multi-task).
    """
    known = test_data.genders >= 0  # (N,)
    truth = test_data.genders[known]
    guessed = estimator.retriever.predict_gender(test_emb[known])
    out = {"gender_accuracy_from_age_embedding": 100.0 * float((guessed == truth).float().mean())}
    if estimator.gender_loss is not None:
        from agemetric.default_plugins.l1_knn import L1KNN

        gallery = L1KNN(k=estimator.retriever.k).fit(
            estimator.embed(train_data.images, part="gender"), train_data.ages, train_data.genders
        )
        guessed = gallery.predict_gender(estimator.embed(test_data.images[known], part="gender"))
        out["gender_accuracy_from_gender_embedding"] = 100.0 * float((guessed == truth).float().mean())
    return out


def evaluate(
    estimator: AgeEstimator, data: FaceArrays, train_ages: torch.Tensor, reporter: Reporter = SILENT
) -> tuple[dict, torch.Tensor]:
    """Metrics of ``estimator`` on ``data`` (its gallery must be fitted); returns (metrics, predictions)."""
    predicted = estimator.predict(data.images, progress=reporter.bar("predict", len(data)))
    return summarise(predicted, data.ages, train_ages), predicted


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


def _write_skipped(path: Path, items: list[tuple[str, str]], header: tuple[str, str] = ("item", "reason")) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(items)


def _write_predictions(path: Path, data: FaceArrays, predicted: torch.Tensor) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "age", "predicted", "abs_error"])
        for key, age, pred in zip(data.keys, data.ages.tolist(), predicted.tolist(), strict=True):
            w.writerow([key, f"{age:g}", f"{pred:.2f}", f"{abs(pred - age):.2f}"])

"""A config's data: its dataset's records, their split, and the decoded, framed images."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import torch

from agemetric import plugins
from agemetric.config import RunConfig
from agemetric.data.arrays import FaceArrays, decode
from agemetric.data.splits import SIDES, Split, hold_out_calibration, make_split, read_split
from agemetric.errors import AgemetricError
from agemetric.interfaces import FaceDataset, FaceRecord, Skipped
from agemetric.reporting import SILENT, Reporter


def select_records(config: RunConfig, leave_out: Collection[str] = ()) -> tuple[FaceDataset, list[FaceRecord]]:
    """Create the dataset plugin and list its records (a seeded random ``limit`` of them, drawn
    after the keys in ``leave_out`` are left out)."""
    dataset = plugins.create("dataset", config.data.dataset, root=config.data.data_dir, **config.data.dataset_options)
    listed = dataset.records()
    records = [r for r in listed if r.key not in leave_out] if leave_out else listed
    if config.data.limit is not None and config.data.limit < len(records):
        pick = torch.randperm(len(records), generator=torch.Generator().manual_seed(config.seed))
        records = [records[i] for i in sorted(pick[: config.data.limit].tolist())]
    if len(records) < 2:
        where = f" in {dataset.root}" if dataset.root else ""
        left = f", {len(listed) - len(records)} left out" if len(listed) > len(records) else ""
        raise AgemetricError(
            f"dataset {config.data.dataset}: found {len(records)} usable image(s){where}{left}; need at least 2"
            + (f" ({dataset.skipped.summary()})" if len(dataset.skipped) else "")
        )
    return dataset, records


def make_framer(config: RunConfig):
    """The run's face framer, by name."""
    return plugins.create("framer", config.model.framing, **config.model.framing_options)


def decode_records(
    dataset: FaceDataset, records: list[FaceRecord], config: RunConfig, reporter: Reporter = SILENT
) -> FaceArrays:
    """Decode ``records`` at the config's size and framing (through the disk cache when on);
    fewer than 2 readable images is an error."""
    arrays = decode(
        dataset,
        records,
        config.model.image_size,
        progress=reporter.bar("decode", len(records)),
        cache=config.data.cache,
        framer=make_framer(config),
        note=lambda text: reporter.note(text, warning=True),
    )
    if len(arrays) < 2:
        raise AgemetricError(
            f"{dataset.describe()}: fewer than 2 images could be decoded ({skipped(dataset, arrays).summary()})"
        )
    return arrays


def skipped(dataset: FaceDataset, data: FaceArrays) -> Skipped:
    """Every row left out: those the dataset could not list, then the images that could not be
    decoded into ``data``."""
    return Skipped([*dataset.skipped.items, *data.unreadable.items])


def load_data(config: RunConfig, reporter: Reporter = SILENT) -> tuple[FaceDataset, FaceArrays]:
    """`select_records()` then `decode_records()`: the whole (limited) dataset as arrays."""
    dataset, records = select_records(config)
    return dataset, decode_records(dataset, records, config, reporter)


def split_records(
    dataset: FaceDataset, records: list[FaceRecord], config: RunConfig, reporter: Reporter = SILENT
) -> Split:
    """The run's split: ``config.data.split_file`` when given, else ``config.data.split`` over content
    hashes; then ``config.evaluation.calibration`` of the training side held out for calibration (unless the
    split file already holds calibration images)."""
    if config.data.split_file:
        split = read_split(config.data.split_file, records)
        if "n_calibration" in split.info or not config.evaluation.calibration:
            return split
        records = [r for r in records if r.key in split.side]
    fingerprints = _fingerprints(dataset, records, split.side if config.data.split_file else None, reporter)
    if not config.data.split_file:
        split = make_split(records, fingerprints, config.data.split, config.data.test_fraction, config.seed)
    if not config.evaluation.calibration:
        return split
    return hold_out_calibration(
        split, records, fingerprints, config.evaluation.calibration, config.seed, config.data.split == "subject"
    )


def _fingerprints(dataset: FaceDataset, records: list[FaceRecord], side: dict | None, reporter: Reporter) -> list:
    """md5 of each record's image (of the training side's only, when ``side`` is given: the others
    are not needed and stand in by their key)."""
    needed = [side is None or side[r.key] == "train" for r in records]
    bar = reporter.bar("fingerprint", sum(needed))
    out = []
    for record, need in zip(records, needed, strict=True):
        out.append(dataset.fingerprint(record) if need else record.key)
        bar.advance(int(need))
    return out


def split_arrays(data: FaceArrays, split: Split) -> tuple[FaceArrays, FaceArrays, FaceArrays]:
    """``data``'s training, calibration (possibly empty) and test sides; fewer than 2 training or
    1 test image is an error."""
    sides = [split.side[k] for k in data.keys]
    train, calibration, test = (
        data.subset(torch.tensor([i for i, s in enumerate(sides) if s == name], dtype=torch.long)) for name in SIDES
    )
    if len(train) < 2 or len(test) < 1:
        raise AgemetricError(f"after decoding, {len(train)} train / {len(test)} test images remain; need >= 2 / >= 1")
    return train, calibration, test


def fallback_summary(config: RunConfig, noted: list[tuple[str, str]]) -> str:
    """``"framing dlib-align: 3 image(s) fell back, e.g. a.jpg (no face found: centre framing)"``."""
    return f"framing {config.model.framing}: {len(noted)} image(s) fell back, e.g. {noted[0][0]} ({noted[0][1]})"


def run_faces(
    run_dir: str | Path,
    sides: Sequence[str] = SIDES,
    data_dir: str | Path | None = None,
    reporter: Reporter | None = None,
) -> dict[str, FaceArrays]:
    """A finished run's faces read again as the run read them: its dataset with its ``config.toml``
    (``data_dir``: where the data is now, when it has moved) and the sides of its ``split.csv``.

    Args:
        run_dir: the run folder.
        sides: which of ``"train"``, ``"calibration"`` and ``"test"`` to decode.
        data_dir: the dataset's folder, instead of the one in ``config.toml``.
        reporter: where the decoding's progress goes.

    Returns:
        ``{side: faces}`` for each of ``sides``.
    """
    from agemetric.runs import RunFolder

    folder = RunFolder(run_dir)
    config = folder.read_config().replace(limit=None)  # the split lists every face the run used
    if data_dir is not None:
        config = config.replace(data_dir=str(data_dir))
    dataset, records = select_records(config)
    side = read_split(folder.split, records).side
    data = decode_records(dataset, [r for r in records if side.get(r.key) in sides], config, reporter or SILENT)
    rows = {name: [i for i, key in enumerate(data.keys) if side[key] == name] for name in sides}
    return {name: data.subset(torch.tensor(index, dtype=torch.long)) for name, index in rows.items()}

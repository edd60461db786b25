"""The run folder: where a run keeps its files, named in this one place.

A finished run folder holds::

    config.toml       the run's settings (``agemetric run --config`` reads it back)
    split.csv         key,side for every image: which were trained on and which were tested
    skipped.csv       images that could not be read (only when there were some)
    framing.csv       images whose face was not found and were framed whole (only when there were some)
    history.json      one entry per epoch: loss, images, seconds
    model.pt          the estimator: network, gallery and settings (``AgeEstimator.load``)
    predictions.csv   key,true age,predicted age (and interval) of every test image
    metrics.json      MAE, CS(k), the split, timings, the machine
    report.md, figures/   the run's report and figures (unless ``figures = false``)

and, while it is unfinished, ``checkpoint.pt`` (``agemetric run --resume``). A run holds the
folder's lock (``.lock``, an advisory ``flock`` that ends with the process) from its start to its
end, so that two runs never write into the same folder.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from agemetric._io import readable_text, remove_orphans
from agemetric.errors import AgemetricError
from agemetric.metrics import check_metrics

if TYPE_CHECKING:
    import torch

    from agemetric.config import RunConfig
    from agemetric.data.splits import Split


class RunFolder:
    """A run's folder and the paths of its files.

    Args:
        path: the folder (it need not exist yet).

    Examples:
        >>> folder = RunFolder("runs/example")
        >>> folder.metrics.as_posix(), folder.finished
        ('runs/example/metrics.json', False)
    """

    CONFIG = "config.toml"
    SPLIT = "split.csv"
    SKIPPED = "skipped.csv"
    FRAMING = "framing.csv"
    CHECKPOINT = "checkpoint.pt"
    HISTORY = "history.json"
    MODEL = "model.pt"
    PREDICTIONS = "predictions.csv"
    METRICS = "metrics.json"
    REPORT = "report.md"
    FIGURES = "figures"
    ADAPTATION = "adaptation.json"
    LOCK = ".lock"
    #: Every file and folder a run writes into its folder: other commands never write over them.
    FILES = (
        CONFIG,
        SPLIT,
        SKIPPED,
        FRAMING,
        CHECKPOINT,
        HISTORY,
        MODEL,
        PREDICTIONS,
        METRICS,
        REPORT,
        FIGURES,
        ADAPTATION,
        LOCK,
    )

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = None  # the open lock file while this process holds the folder

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def split(self) -> Path:
        return self.path / self.SPLIT

    @property
    def skipped(self) -> Path:
        return self.path / self.SKIPPED

    @property
    def framing(self) -> Path:
        return self.path / self.FRAMING

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def figures(self) -> Path:
        return self.path / self.FIGURES

    @property
    def finished(self) -> bool:
        """Whether the folder holds a finished run (its metrics or its model)."""
        return self.metrics.exists() or self.model.exists()

    def owns(self, path: str | Path) -> bool:
        """Whether ``path`` is one of the run's own files in this folder (`FILES`, or a file in
        its ``figures/``), whether or not it exists yet; links are followed.

        Examples:
            >>> folder = RunFolder("runs/example")
            >>> folder.owns("runs/example/model.pt"), folder.owns("runs/example/figures/a.png")
            (True, True)
            >>> folder.owns("runs/example/utkface.json"), folder.owns("model.pt")
            (False, False)
        """
        try:
            inside = Path(path).resolve().relative_to(self.path.resolve())
        except (OSError, RuntimeError, ValueError):  # outside the folder (or a link loop: not a file of the run)
            return False
        return bool(inside.parts) and inside.parts[0] in self.FILES

    def read_metrics(self) -> dict:
        """``metrics.json``, parsed and checked (`agemetric.metrics.check_metrics()`): one-line
        errors naming the file, and the field whose value reports cannot show."""
        with readable_text(self.metrics, "metrics"):
            text = self.metrics.read_text(encoding="utf-8")
        try:
            metrics = json.loads(text)
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise AgemetricError(f"{self.metrics}: not valid JSON ({reason})") from None
        return check_metrics(metrics, self.metrics)

    def read_history(self) -> list[dict]:
        """``history.json``, parsed."""
        return json.loads(self.history.read_text(encoding="utf-8"))

    def read_config(self) -> RunConfig:
        """``config.toml`` (one-line errors for a missing or bad file): the run's settings as
        written, each one it leaves out at its default (no preset is laid under them)."""
        from agemetric.config import RunConfig, load_toml

        if not self.config.is_file():
            raise AgemetricError(f"{self.path}: no {self.CONFIG} (expected a run folder written by `agemetric run`)")
        settings = load_toml(self.config)
        settings.pop("preset", None)
        return RunConfig.from_flat(**settings)

    def read_sides(self) -> dict[str, str]:
        """``split.csv`` as ``{key: side}`` (``train``, ``calibration`` or ``test``); to read the
        faces of some sides, see `agemetric.data.loading.run_faces()`."""
        from agemetric.data.splits import read_sides

        return read_sides(self.split)

    def require_model(self) -> Path:
        """The path of ``model.pt``; a one-line error when the folder holds no finished run."""
        if not self.model.is_file():
            raise AgemetricError(f"{self.path}: not a finished run folder (no {self.MODEL})")
        return self.model

    # -- writing -------------------------------------------------------------------------
    def write_config(self, config: RunConfig) -> None:
        """``config.toml``: the run's settings (see `settings()`), reusable with ``--config``."""
        with writing(self.config):
            self.config.write_text(tomli_w.dumps(settings(config)), encoding="utf-8")

    def holds_config(self, config: RunConfig) -> bool:
        """Whether ``config.toml`` holds exactly ``config``'s settings (``out`` aside)."""
        from agemetric.config import load_toml

        try:
            held = {k: v for k, v in load_toml(self.config).items() if v is not None}
        except AgemetricError:
            return False
        return held == {k: v for k, v in config.flat().items() if k != "out"}

    def write_split(self, split: Split, keys: list[str]) -> None:
        """``split.csv``: the side of every key, in ``keys``' order."""
        from agemetric.data.splits import write_split

        with writing(self.split):
            write_split(self.split, split, keys)

    def write_history(self, history: list[dict]) -> None:
        _write_json(self.history, history)

    def write_metrics(self, metrics: dict) -> None:
        """``metrics.json`` (strict JSON: a value that is not finite is written as ``null``)."""
        _write_json(self.metrics, metrics)

    def write_predictions(
        self,
        keys: Sequence[str],
        ages: torch.Tensor,
        predicted: torch.Tensor,
        bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """``predictions.csv``: key, true age, predicted age and absolute error of every test image,
        and the interval's ends (``low``, ``high``) when the model has intervals."""
        with writing(self.predictions), self.predictions.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["key", "age", "predicted", "abs_error"] + (["low", "high"] if bounds else []))
            ends = list(zip(*(b.tolist() for b in bounds), strict=True)) if bounds else [()] * len(keys)
            for key, age, pred, end in zip(keys, ages.tolist(), predicted.tolist(), ends, strict=True):
                w.writerow([key, f"{age:g}", f"{pred:.2f}", f"{abs(pred - age):.2f}", *(f"{e:.1f}" for e in end)])

    @staticmethod
    def write_items(path: Path, items: list[tuple[str, str]], header: tuple[str, str]) -> None:
        """A two-column CSV of images and what happened to them (``skipped.csv``, ``framing.csv``)."""
        with writing(path), path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(items)

    @classmethod
    def create(cls, out: str | Path | None, dataset: str, backbone: str) -> RunFolder:
        """Make the folder of a new run now, so an unwritable path fails before any training.

        Args:
            out: the folder, or ``None`` for ``runs/<time>-<dataset>-<backbone>``.
            dataset: dataset name, for the default folder name.
            backbone: backbone name, for the default folder name.

        The new run holds the folder's lock (`lock()`) until the process ends or `unlock()`.

        Raises:
            AgemetricError: the folder holds a finished or an unfinished run, or a file with the
                name of a run's file; another run is using it; or it cannot be written.
        """
        try:
            folder = cls._new_default(dataset, backbone) if out is None else cls(out)
            folder.path.mkdir(parents=True, exist_ok=True)
            lock_was_there = (folder.path / cls.LOCK).exists()
            folder.lock()
            with tempfile.TemporaryFile(dir=folder.path):  # can the run write here?
                pass
        except OSError as exc:
            raise AgemetricError(
                f"out: cannot write to {str(cls(out or 'runs').path)!r}: {exc.strerror or exc}"
            ) from None
        refusal = None
        clash = next((name for name in cls.FILES if name != cls.LOCK and (folder.path / name).exists()), None)
        if folder.finished:
            refusal = f"out: {folder.path} already holds a run; choose another folder"
        elif folder.checkpoint.exists():
            refusal = (
                f"out: {folder.path} holds an unfinished run ({cls.CHECKPOINT}); continue it with "
                f"agemetric run --resume {folder.path}, or choose another folder"
            )
        elif clash is not None:  # a file of the user's that the run would write over
            refusal = f"out: {folder.path} holds {clash!r}, which a run would write over; choose a new or empty folder"
        if refusal is not None:  # the folder is left as it was
            folder.unlock()
            if not lock_was_there:
                (folder.path / cls.LOCK).unlink(missing_ok=True)
            raise AgemetricError(refusal)
        return folder

    def discard(self) -> None:
        """Remove what a run that stopped before its first checkpoint wrote (its settings, split,
        lists and history, the lock: `create()` made sure none of them was there before) and the
        folder itself when nothing else is left in it."""
        kept = (self.MODEL, self.METRICS, self.CHECKPOINT, self.FIGURES)  # what a run to keep or resume has
        for name in self.FILES:
            if name not in kept:
                (self.path / name).unlink(missing_ok=True)
        self.unlock()
        empty = [self.path] + ([self.path.parent] if self.path.parent.name == "runs" else [])
        for folder in empty:  # the default parent runs/ goes too when this was its only run
            try:
                folder.rmdir()
            except OSError:
                break  # it holds other files (it existed before): keep it

    @classmethod
    def _new_default(cls, dataset: str, backbone: str) -> RunFolder:
        """A folder ``runs/<time>-<dataset>-<backbone>`` made now (``-2``, ``-3``... when a run
        started in the same second already took the name)."""
        stem = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{dataset}-{backbone}"
        Path("runs").mkdir(exist_ok=True)
        for n in range(1, 1000):
            path = Path("runs") / (stem if n == 1 else f"{stem}-{n}")
            try:
                path.mkdir()  # atomic: exactly one run gets each name
                return cls(path)
            except FileExistsError:
                continue
        raise AgemetricError(f"out: runs/{stem}-*: too many runs started in the same second")

    def lock(self) -> RunFolder:
        """Take the folder's lock for this process (released when it ends, or by `unlock()`).

        Raises:
            AgemetricError: another process holds it.
        """
        import fcntl

        handle = open(self.path / self.LOCK, "a")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AgemetricError(
                f"out: {self.path} is in use by another agemetric run; wait for it to end or choose another folder"
            ) from None
        self._lock = handle
        remove_orphans(self.path, self.FILES)  # a run killed while saving left its temporary file; none writes now
        return self

    def unlock(self) -> None:
        """Release the lock taken by `lock()` (a no-op when this process does not hold it)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def settings(config: RunConfig) -> dict[str, Any]:
    """What describes a run, in sections: every setting except ``out`` (where it was written), so
    that a ``config.toml`` reused with ``--config`` starts a new run folder."""
    out = config.to_dict()
    out["output"].pop("out", None)
    return out


def checkpoint_settings(config: RunConfig) -> dict[str, Any]:
    """The settings a training checkpoint is tied to, by flat name: every setting but ``out`` and
    ``split_file`` (a resumed run reads its own ``split.csv``)."""
    return {k: v for k, v in config.flat().items() if k not in ("out", "split_file")}


def comparable_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """Flat settings a checkpoint saved, in today's types (``multitask = "auto"`` is unset), to
    compare with `checkpoint_settings()`; a setting agemetric no longer knows is kept as it is."""
    from agemetric.config import coerce

    out = {}
    for key, value in saved.items():
        try:
            value = coerce(key, value)
        except AgemetricError:
            pass
        if value is not None:
            out[key] = value
    return out


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _write_json(path: Path, obj: Any) -> None:
    with writing(path):
        path.write_text(json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A failed write of ``path`` (a full disk, a read-only folder) as a one-line error naming it."""
    try:
        yield
    except OSError as exc:
        raise AgemetricError(f"cannot write {path}: {exc.strerror or exc}") from None


__all__ = ["RunFolder"]

"""AgeEstimator: a backbone, a miner, a loss and a retriever, checked to fit together."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import nn

from agemetric import plugins
from agemetric.analysis import Photo, PhotoResult, analyze
from agemetric.calibrated import CalibratedGallery
from agemetric.config import RunConfig
from agemetric.data.arrays import FaceArrays
from agemetric.data.transforms import normalise
from agemetric.devices import Bf16Copy, flush_subnormals, uses_bf16
from agemetric.errors import AgemetricError, PluginError
from agemetric.estimates import Estimates
from agemetric.interfaces import Backbone, Loss, Miner, Retriever
from agemetric.interfaces.checks import check_pair, describe
from agemetric.intervals import ConformalIntervals
from agemetric.spec import ModelSpec, build_parts

if TYPE_CHECKING:
    from agemetric.adaptation import Adaptation

#: what `AgeEstimator.predict()`, `embed()` and `estimate()` take: a uint8 ``(N, 3, S, S)`` batch
#: framed as in training, one photo (a path, an open binary file, a PIL image, a uint8 ``(H, W, 3)``
#: array or tensor), or a list or tuple of photos
Images: TypeAlias = torch.Tensor | Photo | Sequence[Photo | torch.Tensor]


class AgeEstimator(nn.Module):
    """The paper's model: one network embeds faces; ages come from the nearest gallery faces.

    It joins parts that each do one job: the backbone (images to embeddings, here with the
    preprocessing, bfloat16 and flip test-time augmentation around it), the training loss
    (`agemetric.training.TrainStep` over the miner and loss of each task), ``gallery`` (a
    `agemetric.calibrated.CalibratedGallery`: the retriever's gallery, the calibrated intervals
    and any adaptation) and the model file (`agemetric.model_file`).

    Args:
        backbone: images -> embeddings.
        miner: chooses the pairs (or triplets) of a batch.
        loss: scores them; its ``accepts`` must equal the miner's ``produces``.
        retriever: the gallery and the age estimate.
        gender_loss: the multi-task gender loss (by default the age loss's form at margin 0.5),
            or ``None``: no gender task.
        image_size: the input side in pixels.
        spec: the parts by name, stored in ``model.pt`` so `load()` can rebuild them (``None``: the
            default config's, at ``image_size``).
        gender_miner: the gender task's miner (on 0/1 labels); ``None``: the miner ``spec``
            names, at its ``gender_margin`` (0.5 by default: Z = 1 iff the same gender).

    Examples:
        >>> import agemetric
        >>> from agemetric.testing import random_face_arrays
        >>> est = agemetric.AgeEstimator.from_config(agemetric.resolve("quick", sets=["image_size=32"]))
        >>> faces = random_face_arrays(24, size=32)  # uint8 (24, 3, 32, 32) images, ages, genders
        >>> est.training_loss(est.prepare(faces.images), faces.ages, faces.genders)["loss"].ndim
        0
        >>> est.fit_gallery(faces).shape  # the gallery's embeddings (N, N_a)
        torch.Size([24, 70])
        >>> est.predict(faces.images[:5]).shape
        torch.Size([5])
    """

    def __init__(
        self,
        backbone: Backbone,
        miner: Miner,
        loss: Loss,
        retriever: Retriever,
        gender_loss: Loss | None = None,
        image_size: int = 227,
        spec: ModelSpec | None = None,
        gender_miner: Miner | None = None,
    ):
        super().__init__()
        check_pair(miner, loss, "")
        spec = spec or ModelSpec(image_size=image_size, multitask=gender_loss is not None)
        if gender_loss is not None:
            if backbone.gender_dim == 0:
                raise PluginError("the gender task needs a backbone with gender_dim > 0")
            if gender_miner is None:
                gender_miner = plugins.create("miner", spec.miner, margin=spec.gender_margin, **spec.miner_options)
            check_pair(gender_miner, gender_loss, "gender task: ")
        self.gender_miner = gender_miner if gender_loss is not None else None
        if image_size < backbone.min_size:
            raise AgemetricError(
                f"image_size must be >= {backbone.min_size} for {describe(backbone)}, got {image_size}"
            )
        self.backbone, self.miner, self.loss, self.gender_loss = backbone, miner, loss, gender_loss
        retriever.attach(loss)  # a retriever that needs the trained loss keeps it (or refuses it)
        self.gallery = CalibratedGallery(retriever)  # the gallery, its intervals and any adaptation
        self.image_size = image_size
        self.spec = spec
        self.channels_last = self.spec.channels_last
        self._framer = None  # the model's framer, made on first use
        self._bf16_copy = Bf16Copy()  # the backbone `embed()` runs under bfloat16 autocast

    @classmethod
    def from_config(cls, config: RunConfig, multitask: bool | None = None) -> AgeEstimator:
        """Create every part by name from ``config``, the backbone with ``config.training.weights``.

        Args:
            config: the run's config.
            multitask: whether to train the gender head; ``None`` reads ``config.model.multitask``
                (undecided, ``None`` there, counts as off: `agemetric.experiment.run()` decides it
                from the data).
        """
        return cls.from_spec(ModelSpec.from_config(config, multitask), weights=config.training.weights)

    @classmethod
    def from_spec(cls, spec: ModelSpec, weights: str = "none") -> AgeEstimator:
        """Create every part by name from ``spec``.

        Args:
            spec: the model.
            weights: the backbone's initial weights (``"none"``: random).
        """
        spec = dataclasses.replace(spec, multitask=bool(spec.multitask))  # undecided: built without the gender task
        p = build_parts(spec, weights)
        flush_subnormals(p.backbone)
        return cls(p.backbone, p.miner, p.loss, p.retriever, p.gender_loss, spec.image_size, spec, p.gender_miner)

    @property
    def retriever(self) -> Retriever:
        """The retriever holding the gallery (``gallery.retriever``)."""
        return self.gallery.retriever

    @property
    def intervals(self) -> ConformalIntervals | None:
        """The calibrated prediction intervals (`calibrate()`, `adapt()`), or ``None``."""
        return self.gallery.intervals

    @intervals.setter
    def intervals(self, value: ConformalIntervals | None) -> None:
        self.gallery.intervals = value

    @property
    def adaptation(self) -> dict | None:
        """What `adapt()` chose and measured (`agemetric.adaptation.Adaptation.to_dict()`), or ``None``."""
        return self.gallery.adaptation

    @adaptation.setter
    def adaptation(self, value: dict | None) -> None:
        self.gallery.adaptation = value

    @property
    def device(self) -> torch.device:
        """Where the parameters are (move the estimator with ``.to(device)``)."""
        return next(self.backbone.parameters()).device

    @property
    def bf16(self) -> bool:
        """Whether `autocast()` uses bfloat16 on the current device (``spec.bf16``)."""
        return uses_bf16(self.spec.bf16, self.device.type)

    @property
    def framer(self):
        """The model's face framer (`agemetric.interfaces.Framer`), made on first use
        from ``spec.framing``."""
        if self._framer is None:
            self._framer = plugins.create("framer", self.spec.framing, **self.spec.framing_options)
        return self._framer

    # -- training -----------------------------------------------------------------------

    def prepare(
        self, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """uint8 ``(B, 3, S, S)`` -> normalised float on the estimator's device, in the backbone's
        memory format.

        Args:
            images: the batch.
            transform: applied to the normalised batch on the CPU before it moves to the device
                (training passes its augmentation), or ``None``.
        """
        x = normalise(images, self.backbone.mean, self.backbone.std)  # (B, 3, S, S)
        if transform is not None:
            x = transform(x)
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        """bfloat16 autocast on the estimator's device when enabled (a no-op context otherwise)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def training_loss(
        self,
        x: torch.Tensor,
        ages: torch.Tensor,
        genders: torch.Tensor,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict:
        """The multi-task loss of one prepared batch (`agemetric.training.TrainStep`, whose
        arguments these are): ``{"loss": total, "age": ..., "gender": ...}`` 0-d tensors."""
        from agemetric.training.step import TrainStep

        return TrainStep(self)(x, ages, genders, gather)

    # -- estimation ---------------------------------------------------------------------

    def embed(
        self,
        images: Images,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
        part: str = "age",
    ) -> torch.Tensor:
        """Embeddings of images, in eval mode (with ``spec.tta_flip``, the mean of each image's
        and its mirror image's embedding).

        Args:
            images: a uint8 ``(N, 3, S, S)`` batch, framed and resized as in training; or photos,
                framed with the run's framing (the main face of each) and resized: a path, a PIL
                image, a uint8 ``(H, W, 3)`` array or tensor, or a list of them.
            part: ``"age"`` -> ``(N, N_a)``; ``"gender"`` -> ``(N, N_g)`` (multi-task backbones only).

        Returns:
            float32 embeddings.
        """
        return self.embed_parts(images, (part,), batch_size, progress)[part]

    @torch.no_grad()
    def embed_parts(
        self,
        images: Images,
        parts: str | Sequence[str] | None = None,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Several parts' embeddings of images from one pass through the network, each as `embed()`
        gives it: ``{"age": (N, N_a), "gender": (N, N_g)}``. ``parts``: ``"age"``, ``"gender"`` or
        both; by default the age, and the gender too when the backbone has a gender head."""
        images = self.as_batch(images)
        if parts is None:
            parts = ("age", "gender") if self.backbone.gender_dim else ("age",)
        parts = tuple(dict.fromkeys((parts,) if isinstance(parts, str) else parts))  # each once
        for part in parts:
            if part not in ("age", "gender") or (part == "gender" and self.backbone.gender_dim == 0):
                raise AgemetricError(f"part must be 'age' or (with a gender head) 'gender', got {part!r}")
        dims = {"age": self.backbone.embedding_dim, "gender": self.backbone.gender_dim}
        was_training, switched = self.training, any(m.training for m in self.modules())
        if switched:  # eval() walks every module: not on each call of a model already in eval mode
            self.eval()
        out: dict[str, list[torch.Tensor]] = {part: [] for part in parts}
        try:
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size]
                x = self.prepare(batch)
                if self.spec.tta_flip:  # the image and its mirror image in one pass (eval mode: rows independent)
                    x = torch.cat([x, x.flip(3)])
                with self.autocast():
                    backbone = self._bf16_copy(self.backbone) if self.bf16 else self.backbone
                    output = backbone(x)
                for part in parts:
                    e = getattr(output, part).float()  # (b, D), or (2b, D) with the mirrors
                    if self.spec.tta_flip:  # the mean of the image's and its mirror's embedding
                        e = (e[: len(batch)] + e[len(batch) :]) / 2
                    out[part].append(e.cpu())
                if progress is not None:
                    progress(batch.shape[0])
        finally:
            if switched:
                self.train(was_training)
        return {part: torch.cat(rows) if rows else torch.empty(0, dims[part]) for part, rows in out.items()}

    def as_batch(self, images: Images) -> torch.Tensor:
        """`embed()`'s and `predict()`'s input as a uint8 ``(N, 3, S, S)`` tensor (photos are
        framed and resized; anything else is a one-line error saying what was expected)."""
        s = self.image_size
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.shape[1:] == (3, s, s):
            return images
        from agemetric.photos import photo_batch

        return torch.from_numpy(photo_batch(images, s, self.framer))

    def fit_gallery(
        self,
        data: FaceArrays,
        progress: Callable[[int], None] | None = None,
        embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed ``data`` (``embeddings``: its age embeddings, when already computed) and make it
        the retriever's gallery; returns the embeddings ``(N, N_a)``."""
        emb = self.embed(data.images, progress=progress) if embeddings is None else embeddings
        self.gallery.fit(emb, data.ages, data.genders)
        return emb

    def require_gallery(self) -> None:
        """A one-line error unless `fit_gallery()` (or `load()`) gave the retriever a gallery."""
        self.gallery.require()

    def predict(self, images: Images, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Predicted ages ``(N,)`` of images, one per image: a uint8 ``(N, 3, S, S)`` batch, or
        photos (a path, a PIL image, a uint8 ``(H, W, 3)`` array or tensor, or a list of them; see
        `embed()`). Of a photo with several faces only the main (largest) face is estimated; a
        photo where the framer finds no face is estimated from its fallback framing (the whole
        photo). For every face with its box, and no estimate where none was found, use `analyze()`.

        Examples:
            >>> import agemetric, numpy as np
            >>> from agemetric.testing import random_face_arrays
            >>> est = agemetric.AgeEstimator.from_config(agemetric.resolve("quick", sets=["image_size=32"]))
            >>> _ = est.fit_gallery(random_face_arrays(24, size=32))
            >>> est.predict(np.zeros((50, 40, 3), np.uint8)).shape
            torch.Size([1])
            >>> est.predict(np.zeros((50, 40, 3), np.float32))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            agemetric.errors.AgemetricError: images: expected uint8 pixels 0-255, got dtype float32 ...
        """
        self.require_gallery()
        return self.gallery.predict(self.embed(images, progress=progress))

    def calibrate(
        self, data: FaceArrays, level: float = 0.9, embeddings: torch.Tensor | None = None, groups: int = 1
    ) -> ConformalIntervals:
        """Calibrate prediction intervals on ``data``: faces neither trained on nor in the gallery
        (see `agemetric.intervals`); `estimate()` gives them from then on, and `save()` keeps them.
        ``embeddings``: ``data``'s, when already computed; ``groups``: calibrate apart in up to
        this many groups of similar estimates (`ConformalIntervals.calibrate`)."""
        self.require_gallery()
        emb = self.embed(data.images) if embeddings is None else embeddings
        return self.gallery.calibrate(emb, data.ages, level, groups)

    def estimate(
        self,
        images: Images,
        under: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Estimates:
        """Ages with the neighbours' spread, the calibrated interval (after `calibrate()`) and,
        with ``under``, the probability of being younger than that age, as numpy arrays (the
        same `Estimates` a `Bundle` gives).

        Examples:
            >>> import agemetric
            >>> from agemetric.testing import random_face_arrays
            >>> est = agemetric.AgeEstimator.from_config(agemetric.resolve("quick", sets=["image_size=32", "k=5"]))
            >>> _ = est.fit_gallery(random_face_arrays(40, size=32, seed=0))
            >>> ci = est.calibrate(random_face_arrays(20, size=32, seed=1), level=0.9)
            >>> e = est.estimate(random_face_arrays(3, size=32, seed=2).images, under=18)
            >>> e.age.shape, bool((e.low <= e.age).all() and (e.age <= e.high).all()), e.under.shape
            ((3,), True, (3,))
        """
        self.require_gallery()
        return self.gallery.estimate(self.embed(images, progress=progress), under)

    def analyze(self, photos: Photo | Sequence[Photo], under: float | None = None) -> list[PhotoResult]:
        """Every face of each photo with its box, age, interval and (with ``under``) the
        probability of being younger than ``under`` years: `agemetric.analysis.analyze()`, whose
        arguments these are. One `agemetric.analysis.PhotoResult` per photo; its
        ``to_dict()`` is the JSON ``agemetric predict --json`` prints."""
        self.require_gallery()
        return analyze(self, photos, under)

    # -- a new domain -------------------------------------------------------------------

    def adapt(self, faces: FaceArrays | list, ages: Sequence[float] | None = None, seed: int = 0) -> Adaptation:
        """Adapt to the user's own photos with a few labelled faces of them: choose how to
        combine them with the training gallery (yours alone, both with a weight, or the
        training gallery kept; ``k``) by cross-validation on those faces, and recalibrate the
        intervals on them (see `agemetric.adaptation`). The estimator changes in place; `save()`
        keeps the adaptation.

        Args:
            faces: a `FaceArrays` (framed as in training, with ages), or photos (paths, PIL
                images, uint8 arrays; the main face of each) with their ``ages``.
            ages: ``(n,)`` true ages of the photos (not with a `FaceArrays`).
            seed: how faces are dealt into cross-validation folds.

        Returns:
            The decision, with the cross-validated MAE and coverage before and after.
        """
        self.gallery.require_adaptable()  # before any photo is read
        if isinstance(faces, FaceArrays):
            images, ages, genders = faces.images, faces.ages, faces.genders
        else:
            from agemetric.adaptation import checked_ages

            ages = checked_ages(ages, len(faces))  # before any photo is read
            images, genders = self.as_batch(faces), None
        report = self.gallery.adapt(self.embed(images), torch.as_tensor(ages, dtype=torch.float32), genders, seed)
        self.spec = dataclasses.replace(self.spec, k=report.chosen.k)
        return report

    # -- persistence --------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the spec, the weights, the gallery, the intervals and any adaptation to ``path``
        atomically (`agemetric.model_file`)."""
        from agemetric.model_file import write_model

        write_model(self, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> AgeEstimator:
        """Rebuild an estimator (parts by name, weights, gallery) from `save()`'s file, or from the
        ``model.pt`` of a run folder given as the folder; anything in it that does not fit is a
        one-line error naming the file."""
        from agemetric.model_file import read_model

        path = Path(path)
        if path.is_dir():
            if not (path / "model.pt").is_file():
                raise AgemetricError(f"{path} is a folder without a model.pt: give a run folder or a model file")
            path = path / "model.pt"
        return read_model(cls, path)

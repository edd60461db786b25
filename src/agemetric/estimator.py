"""AgeEstimator: a backbone, a miner, a loss and a retriever, checked to fit together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from agemetric import plugins
from agemetric._io import atomic_torch_save, load_torch
from agemetric.config import RunConfig
from agemetric.data.arrays import FaceArrays
from agemetric.data.transforms import normalise
from agemetric.errors import AgemetricError, PluginError
from agemetric.interfaces import Backbone, Loss, Miner, Retriever
from agemetric.interfaces.checks import describe, type_names

#: The gender task's default margin: on 0/1 labels Z = 1 iff |g_i - g_j| < 0.5, i.e. same gender
#: (the paper's "margin 0" under its <= reading).
GENDER_MARGIN = 0.5


@dataclass
class Parts:
    """The plugins a config names, created: what `AgeEstimator` is made of."""

    backbone: Backbone | None  # None when `build_parts()` was asked for the light parts only
    miner: Miner
    loss: Loss
    retriever: Retriever
    gender_miner: Miner | None = None
    gender_loss: Loss | None = None


def build_parts(config: RunConfig, multitask: bool, backbone: bool = True) -> Parts:
    """Create every part ``config`` names, with its options (one-line errors for a wrong name or
    option). The gender task's parts come from ``gender_loss`` / ``gender_miner`` at
    ``gender_margin`` (by default the age task's plugins, created again with that margin).

    Args:
        config: the run's config.
        multitask: whether to create the gender head and the gender task's parts.
        backbone: ``False`` skips the backbone (the heavy part), e.g. for an early check.
    """
    net = None
    if backbone:
        net = plugins.create(
            "backbone",
            config.backbone,
            embedding_dim=config.embedding_dim,
            gender_dim=config.gender_dim if multitask else 0,
            weights=config.weights,
            **config.backbone_options,
        )
    parts = Parts(
        net,
        plugins.create("miner", config.miner, margin=config.margin, **config.miner_options),
        plugins.create("loss", config.loss, margin=config.margin, **config.loss_options),
        plugins.create("retriever", config.retriever, k=config.k, **config.retriever_options),
    )
    if multitask:
        parts.gender_miner = _gender_part("miner", config.gender_miner, config.miner, config.miner_options, config)
        parts.gender_loss = _gender_part("loss", config.gender_loss, config.loss, config.loss_options, config)
    return parts


def _gender_part(kind: str, name: str | None, age_name: str, age_options: dict, config: RunConfig):
    """The gender task's miner or loss: its own plugin, or the age task's with the same options."""
    if name is None or plugins.canonical(name) == plugins.canonical(age_name):
        return plugins.create(kind, age_name, margin=config.gender_margin, **age_options)
    return plugins.create(kind, name, margin=config.gender_margin)


#: The version of model.pt's layout (what `AgeEstimator.save` writes).
MODEL_FORMAT = 1


def bf16_supported(device: str = "cpu") -> bool:
    """True when ``device`` (``"cpu"`` or ``"cuda"``) runs bfloat16 matrix maths natively
    (CPU: AVX512-BF16 or AMX; GPU: Ampere or newer)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))


def _check_pair(miner: Miner, loss: Loss, task: str) -> None:
    if not loss.takes(miner.produces):
        raise PluginError(
            f"{task}{describe(miner)} produces {miner.produces.__name__} but {describe(loss)} accepts "
            f"{type_names(loss.accepts)}; choose a matching pair"
        )


class AgeEstimator(nn.Module):
    """The paper's model: one network embeds faces; ages come from the nearest gallery faces.

    Args:
        backbone: images -> embeddings.
        miner: chooses the pairs (or triplets) of a batch.
        loss: scores them; its ``accepts`` must equal the miner's ``produces``.
        retriever: the gallery and the age estimate.
        gender_loss: the multi-task gender loss (by default the age loss's form at margin 0.5),
            or ``None``: no gender task.
        image_size: the input side in pixels.
        config: the run's config, stored in checkpoints so `load()` can rebuild the parts.
        gender_miner: the gender task's miner (on 0/1 labels); ``None``: the all-pairs miner.
    """

    def __init__(
        self,
        backbone: Backbone,
        miner: Miner,
        loss: Loss,
        retriever: Retriever,
        gender_loss: Loss | None = None,
        image_size: int = 227,
        config: RunConfig | None = None,
        gender_miner: Miner | None = None,
    ):
        super().__init__()
        _check_pair(miner, loss, "")
        if gender_loss is not None:
            if backbone.gender_dim == 0:
                raise PluginError("the gender task needs a backbone with gender_dim > 0")
            if gender_miner is None:
                gender_miner = plugins.create("miner", "all-pairs", margin=GENDER_MARGIN)
            _check_pair(gender_miner, gender_loss, "gender task: ")
        self.gender_miner = gender_miner if gender_loss is not None else None
        if image_size < backbone.min_size:
            raise AgemetricError(
                f"image_size must be >= {backbone.min_size} for {describe(backbone)}, got {image_size}"
            )
        self.backbone, self.miner, self.loss, self.gender_loss = backbone, miner, loss, gender_loss
        retriever.attach(loss)  # a retriever that needs the trained loss keeps it (or refuses it)
        self.retriever = retriever
        self.image_size = image_size
        self.config = config or RunConfig(image_size=image_size)
        self.channels_last = self.config.channels_last
        self._framer = None  # the run's framer, made on first use by as_batch()

    @classmethod
    def from_config(cls, config: RunConfig, multitask: bool | None = None) -> AgeEstimator:
        """Create every part by name from ``config``.

        Args:
            config: the run's config.
            multitask: whether to train the gender head; ``None`` reads ``config.multitask``
                (``"auto"`` counts as off here: [`agemetric.experiment.run()`][agemetric.experiment.run] decides it
                from the data).
        """
        if multitask is None:
            multitask = config.multitask == "on"
        p = build_parts(config, multitask)
        return cls(p.backbone, p.miner, p.loss, p.retriever, p.gender_loss, config.image_size, config, p.gender_miner)

    @property
    def device(self) -> torch.device:
        """Where the parameters are (move the estimator with ``.to(device)``)."""
        return next(self.backbone.parameters()).device

    @property
    def bf16(self) -> bool:
        """Whether `autocast()` uses bfloat16 on the current device (``config.bf16``)."""
        if self.config.bf16 == "auto":
            return bf16_supported(self.device.type)
        return self.config.bf16 == "on"

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
        """The multi-task loss of one prepared batch.

        Args:
            x: ``(B, 3, S, S)`` float, from `prepare()` (and augmentation).
            ages: ``(B,)`` float.
            genders: ``(B,)`` int64, -1 unknown (those rows sit out the gender task).
            gather: in data-parallel training, joins every process's rows of a tensor into the
                global batch ([`agemetric.distributed.gather()`][agemetric.distributed.gather]), so that the miner
                sees the
                pairs of the global batch; ``None`` on one process.

        Returns:
            ``{"loss": total, "age": ..., "gender": ...}`` 0-d tensors (``gender`` only when on).
        """
        ages, genders = ages.to(x.device), genders.to(x.device)
        with self.autocast():
            emb = self.backbone(x)
        if gather is not None:
            emb = type(emb)(*(None if t is None else gather(t) for t in emb))
            ages, genders = gather(ages), gather(genders)
        age_emb = emb.age.float()  # (B, N_a); the loss runs in float32
        age_loss = self.loss(age_emb, ages, self.miner(age_emb, ages))
        out = {"loss": age_loss, "age": age_loss.detach()}
        if self.gender_loss is not None:
            known = genders >= 0  # (B,)
            g_emb, g = emb.gender.float()[known], genders[known]  # (B', N_g), (B',)
            g_loss = self.gender_loss(g_emb, g.float(), self.gender_miner(g_emb, g.float()))
            out["loss"] = age_loss + g_loss
            out["gender"] = g_loss.detach()
        return out

    # -- estimation ---------------------------------------------------------------------

    @torch.no_grad()
    def embed(
        self,
        images: torch.Tensor | str | Path | list,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
        part: str = "age",
    ) -> torch.Tensor:
        """Embeddings of images, in eval mode (with ``config.tta_flip``, the mean of each image's
        and its mirror image's embedding).

        Args:
            images: a uint8 ``(N, 3, S, S)`` batch, framed and resized as in training; or photos,
                framed with the run's framing (the main face of each) and resized: a path, a PIL
                image, a uint8 ``(H, W, 3)`` array or tensor, or a list of them.
            part: ``"age"`` -> ``(N, N_a)``; ``"gender"`` -> ``(N, N_g)`` (multi-task backbones only).

        Returns:
            float32 embeddings.
        """
        images = self.as_batch(images)
        if part not in ("age", "gender") or (part == "gender" and self.backbone.gender_dim == 0):
            raise AgemetricError(f"part must be 'age' or (with a gender head) 'gender', got {part!r}")
        dim = self.backbone.embedding_dim if part == "age" else self.backbone.gender_dim
        was_training = self.training
        self.eval()
        out = []
        try:
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size]
                x = self.prepare(batch)
                with self.autocast():
                    e = getattr(self.backbone(x), part).float()  # (b, D)
                    if self.config.tta_flip:  # the mean of the image's and its mirror's embedding
                        e = (e + getattr(self.backbone(x.flip(3)), part).float()) / 2
                out.append(e.cpu())
                if progress is not None:
                    progress(batch.shape[0])
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, dim)

    def as_batch(self, images: torch.Tensor | str | Path | list) -> torch.Tensor:
        """`embed()`'s and `predict()`'s input as a uint8 ``(N, 3, S, S)`` tensor (photos are
        framed and resized; anything else is a one-line error saying what was expected)."""
        s = self.image_size
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.shape[1:] == (3, s, s):
            return images
        from agemetric.photos import photo_batch

        if self._framer is None:
            self._framer = plugins.create("framer", self.config.framing, **self.config.framing_options)
        return torch.from_numpy(photo_batch(images, s, self._framer))

    def fit_gallery(self, data: FaceArrays, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Embed ``data`` and make it the retriever's gallery; returns the embeddings ``(N, N_a)``."""
        emb = self.embed(data.images, progress=progress)
        self.retriever.fit(emb, data.ages, data.genders)
        return emb

    def predict(
        self, images: torch.Tensor | str | Path | list, progress: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """Predicted ages ``(N,)`` of images: a uint8 ``(N, 3, S, S)`` batch, or photos (a path, a PIL
        image, a uint8 ``(H, W, 3)`` array or tensor, or a list of them; see `embed()`).

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
        if len(self.retriever) == 0:
            raise AgemetricError("the estimator has no gallery yet: call fit_gallery() first")
        return self.retriever.predict(self.embed(images, progress=progress))

    # -- persistence --------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the weights, the gallery and the config to ``path`` atomically."""
        state = {
            "format": MODEL_FORMAT,
            "config": self.config.to_dict(),
            "multitask": self.gender_loss is not None,
            "backbone": self.backbone.state_dict(),
            # empty unless a loss has parameters (e.g. a comparator head)
            "loss": self.loss.state_dict(),
            "gender_loss": None if self.gender_loss is None else self.gender_loss.state_dict(),
            "retriever": self.retriever.state_dict(),
        }
        atomic_torch_save(state, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> AgeEstimator:
        """Rebuild an estimator (parts by name, weights, gallery) from `save()`'s file."""
        path = Path(path)
        state = load_torch(path, "checkpoint")
        if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
            raise AgemetricError(f"{path}: not an agemetric checkpoint (format {MODEL_FORMAT})")
        try:
            config = RunConfig(**{**state["config"], "weights": "none"})
            est = cls.from_config(config, multitask=state["multitask"])
            est.backbone.load_state_dict(state["backbone"])
            est.loss.load_state_dict(state.get("loss") or {})
            if est.gender_loss is not None:
                est.gender_loss.load_state_dict(state.get("gender_loss") or {})
            if state["retriever"]["embeddings"] is not None:
                est.retriever.load_state_dict(state["retriever"])
        except (KeyError, TypeError, ValueError, RuntimeError, AgemetricError) as exc:
            what = f"missing {exc}" if isinstance(exc, KeyError) else (str(exc).strip().splitlines() or [""])[0]
            raise AgemetricError(
                f"{path}: cannot rebuild the model ({what}); it may come from another agemetric version or "
                "need a plugin that is not installed"
            ) from None
        est.eval()
        return est

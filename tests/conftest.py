"""Shared fixtures: tiny image folders made on the fly (tests never read shared data)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def write_face(path, seed: int, size: int = 40) -> None:
    """A small random RGB JPEG."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's image cache."""
    monkeypatch.setenv("AGEMETRIC_CACHE", str(tmp_path_factory.getbasetemp() / "agemetric-cache"))


@pytest.fixture
def utk_dir(tmp_path):
    """A UTKFace-style folder: 6 good files, one badly named, one corrupt, one zero-byte."""
    root = tmp_path / "UTKFace"
    root.mkdir()
    for i, (age, gender) in enumerate([(1, 0), (25, 1), (30, 0), (47, 1), (60, 0), (85, 1)]):
        write_face(root / f"{age}_{gender}_0_2017011{i}000000000.jpg.chip.jpg", seed=i)
    write_face(root / "61_1_20170109142408075.jpg.chip.jpg", seed=10)  # missing the race field
    (root / "30_1_2_20170116171436000.jpg.chip.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (root / "31_0_1_20170116171436001.jpg.chip.jpg").write_bytes(b"")
    return root


@pytest.fixture
def csv_dir(tmp_path):
    """A CSV dataset with good rows and rows broken in every way the loader must survive."""
    root = tmp_path / "faces"
    (root / "img").mkdir(parents=True)
    for i in range(6):
        write_face(root / "img" / f"{i}.jpg", seed=i)
    rows = [
        "path,age,gender,subject",
        "img/0.jpg,20,m,s1",
        "img/1.jpg,35,F,s1",
        "img/2.jpg,50,,s2",
        "img/3.jpg,-4,m,s3",
        "img/4.jpg,abc,f,s3",
        "img/5.jpg,nan,f,s4",
        "img/missing.jpg,40,m,s5",
        "img/0.jpg,22,x,s6",
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


#: the image size of `make_run`'s runs
RUN_SIZE = 32


def _make_run(folder, retriever: str = "l1-knn", interval_level: float | None = None, **config):
    """A small_cnn run folder (``model.pt`` and ``config.toml``) with a multi-task head, BatchNorm statistics that
    are not the defaults, and a 60-face gallery; float32 throughout (``bf16="off"``). With ``interval_level``,
    intervals calibrated at that level on 40 other faces."""
    import torch

    from agemetric.config import RunConfig
    from agemetric.estimator import AgeEstimator
    from agemetric.runs import RunFolder
    from agemetric.testing import random_face_arrays

    config = RunConfig.from_flat(
        **{
            "backbone": "small_cnn",
            "weights": "none",
            "embedding_dim": 8,
            "gender_dim": 4,
            "image_size": RUN_SIZE,
            "k": 3,
            "retriever": retriever,
            "bf16": "off",
            "backbone_options": {"width": 8},
            **config,
        }
    )
    estimator = AgeEstimator.from_config(config, multitask=True)
    with torch.no_grad():  # move the BatchNorm running statistics away from (0, 1)
        for seed in range(3):
            estimator.backbone(estimator.prepare(random_face_arrays(16, RUN_SIZE, seed=10 + seed).images))
    estimator.fit_gallery(random_face_arrays(60, RUN_SIZE))
    if interval_level is not None:
        estimator.calibrate(random_face_arrays(40, RUN_SIZE, seed=7), level=interval_level)
    folder.mkdir(parents=True, exist_ok=True)
    estimator.save(folder / "model.pt")
    RunFolder(folder).write_config(config)
    return AgeEstimator.load(folder / "model.pt")  # in eval mode, as predict uses it


@pytest.fixture(scope="session")
def make_run():
    """``make_run(folder, retriever="l1-knn", **config) -> AgeEstimator``: a small trained-looking
    run folder (``model.pt`` and ``config.toml``), without training."""
    return _make_run

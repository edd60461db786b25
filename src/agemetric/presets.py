"""The presets: named starting points for a run's settings (`agemetric.config.resolve`)."""

from __future__ import annotations

from typing import Any

#: the face recipe (``--preset face``)
_FACE: dict[str, Any] = {
    # Real faces and ordinary photos: dlib's face-trained ResNet-10 (agemetric-dlib) on
    # dlib-aligned 64 px chips, Adam 1e-4 (heads 1e-3), dropout 0.1 before the heads, an
    # auxiliary age classifier on the embedding (weight 3; the gender task, made with the
    # same options, classifies its 0/1 labels the same way), rotation and brightness/contrast
    # jitter on top of flip, shift and zoom, flip test-time augmentation, a moving average
    # of the weights, and the mean age of the 50 nearest faces. Each choice was measured on
    # a validation split (docs/presets-chosen.md, "Levers of the face recipe"); 12 epochs, because
    # it overfits after that (24 epochs were worse on the validation split).
    "backbone": "dlib-resnet10",
    "weights": "dlib",
    "framing": "dlib-align",
    "image_size": 64,
    "head_lr": 1e-3,
    "backbone_options": {"dropout": 0.1},
    "loss_options": {"classifier": 3.0},
    "augment_options": {"rotate": 10.0, "jitter": 0.2},
    "tta_flip": True,
    "weight_average": 0.998,
    "k": 50,
    "epochs": 12,
}

#: Named starting points. ``quick`` is what ``agemetric run`` does with no options.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        # The embedded synthetic faces and a small CNN, in about a minute of training on 2 CPU
        # cores (float32). Measured on three seeds (docs/presets-chosen.md, "The quick preset"):
        # small_cnn's strided stem trains 3.5 times faster than full-resolution blocks at 64 px
        # (48 px was faster still but did not halve the mean predictor's error on every seed);
        # Adam at 1e-3 leaves the loss's early plateau within 8 epochs where Adadelta stayed on
        # it on one seed in three; without augmentation or dropout it learns the drawn faces in
        # fewer epochs (neither helps on faces that are all drawn alike).
        "backbone": "small_cnn",
        "weights": "none",
        "backbone_options": {"dropout": 0.0},
        "dataset": "synthetic",
        "image_size": 64,
        "epochs": 8,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "augment": False,
    },
    "paper": {
        # Jeong et al. (2018): Inception V3 (ImageNet), 227 px, batch 128, Adadelta, 275 epochs.
        "optimizer": "adadelta",
        "lr": 1.0,
    },
    "face": _FACE,
    "face-pair": {
        # The face recipe on both of dlib's face-trained networks in one model (agemetric-dlib's
        # dlib-pair): the age network on 64 px and the face recognition network on 112 px
        # chips, each with its own 70-d age and 10-d gender halves of the embedding and its own
        # losses (loss_options.parts = 2), so they learn as two members of an ensemble; the nearest
        # faces are found on the whole embedding (the two L1 distances added). About 4 times the
        # face preset's training time for about 0.2 years lower error on the validation split.
        **_FACE,
        "backbone": "dlib-pair",
        "image_size": 112,
        "embedding_dim": 140,
        "gender_dim": 20,
        "loss_options": {"classifier": 3.0, "parts": 2},
    },
    "finetune": {
        # The defaults: the paper's method with Adam at lr 1e-4 (measured best for fine-tuning an
        # ImageNet backbone at a fixed budget). Name your data, backbone and budget on top.
    },
}

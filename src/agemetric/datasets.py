"""Datasets: readers of labelled face folders (UTKFace, MORPH, MegaAge-Asian, FG-NET, a CSV of
your own) and the synthetic faces the tests and the quick start use."""

from agemetric.default_plugins.csv_dataset import CSVFaces
from agemetric.default_plugins.fgnet import FGNet
from agemetric.default_plugins.megaage import MegaAgeAsian
from agemetric.default_plugins.morph import Morph
from agemetric.default_plugins.synthetic_dataset import SyntheticFaces
from agemetric.default_plugins.utkface import UTKFace
from agemetric.interfaces import FaceDataset, FaceRecord

__all__ = ["CSVFaces", "FGNet", "FaceDataset", "FaceRecord", "MegaAgeAsian", "Morph", "SyntheticFaces", "UTKFace"]

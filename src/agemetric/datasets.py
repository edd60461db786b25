"""Datasets: readers of labelled face folders (UTKFace, MORPH, MegaAge-Asian, FG-NET, a CSV of
your own) and the synthetic faces the tests and the quick start use."""

from agemetric.data.csv_dataset import CSVFaces
from agemetric.data.fgnet import FGNet
from agemetric.data.megaage import MegaAgeAsian
from agemetric.data.morph import Morph
from agemetric.data.synthetic_dataset import SyntheticFaces
from agemetric.data.utkface import UTKFace
from agemetric.interfaces import FaceDataset, FaceRecord

__all__ = ["CSVFaces", "FGNet", "FaceDataset", "FaceRecord", "MegaAgeAsian", "Morph", "SyntheticFaces", "UTKFace"]

"""The dataset plugins that ship with agemetric."""

from agemetric.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from agemetric.data.csv_dataset import CSVFaces
    from agemetric.data.fgnet import FGNet
    from agemetric.data.megaage import MegaAgeAsian
    from agemetric.data.morph import Morph
    from agemetric.data.synthetic_dataset import SyntheticFaces
    from agemetric.data.utkface import UTKFace

    register("synthetic", SyntheticFaces)
    register("csv", CSVFaces)
    register("utkface", UTKFace)
    register("morph", Morph)
    register("megaage-asian", MegaAgeAsian)
    register("fgnet", FGNet)

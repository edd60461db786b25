"""The dataset plugins that ship with agemetric: the readers beside this file, registered by name."""

from agemetric.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from agemetric.default_plugins.csv_dataset import CSVFaces
    from agemetric.default_plugins.fgnet import FGNet
    from agemetric.default_plugins.megaage import MegaAgeAsian
    from agemetric.default_plugins.morph import Morph
    from agemetric.default_plugins.synthetic_dataset import SyntheticFaces
    from agemetric.default_plugins.utkface import UTKFace

    register("synthetic", SyntheticFaces)
    register("csv", CSVFaces)
    register("utkface", UTKFace)
    register("morph", Morph)
    register("megaage-asian", MegaAgeAsian)
    register("fgnet", FGNet)

"""The dataset plugins that ship with agemetric."""

from agemetric.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from agemetric.data.csv_dataset import CSVFaces
    from agemetric.data.synthetic_dataset import SyntheticFaces
    from agemetric.data.utkface import UTKFace

    register("synthetic", SyntheticFaces)
    register("csv", CSVFaces)
    register("utkface", UTKFace)

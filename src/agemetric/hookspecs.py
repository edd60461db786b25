"""The hooks a plugin can implement. Each receives a ``register`` callback; none touches a global.

Example plugin module::

    from agemetric import hookimpl

    @hookimpl
    def register_losses(register):
        register("my-loss", MyLoss)
"""

import pluggy

hookspec = pluggy.HookspecMarker("agemetric")
hookimpl = pluggy.HookimplMarker("agemetric")


@hookspec
def register_backbones(register):
    """Register backbone factories: ``register(name, factory)``, factory -> `Backbone`."""


@hookspec
def register_losses(register):
    """Register loss factories: ``register(name, factory)``, factory -> `Loss`."""


@hookspec
def register_miners(register):
    """Register miner factories: ``register(name, factory)``, factory -> `Miner`."""


@hookspec
def register_retrievers(register):
    """Register retriever factories: ``register(name, factory)``, factory -> `Retriever`."""


@hookspec
def register_datasets(register):
    """Register dataset factories: ``register(name, factory)``, factory -> `FaceDataset`."""


@hookspec
def register_framers(register):
    """Register face framers: ``register(name, factory)``, factory -> `Framer`."""


@hookspec
def register_commands(cli):
    """Add commands to the ``agemetric`` typer app ``cli`` (``@cli.command()``)."""

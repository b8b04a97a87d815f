"""Where gsy-e imports its blockchain interface from; the plug-in is ``pilotchain_gsy_plugin``.

Grid Singularity's own gsy-dex distribution installs this same module path. If it is installed
in this environment too, one of the two has overwritten or shadowed the other's files and
which ledger gsy-e reaches is an accident: refuse to load rather than send trades somewhere
nobody chose. (Looking up one distribution's metadata costs about a millisecond, once.)
"""

from importlib import metadata

try:
    _gsy_dex = metadata.distribution("gsy-dex")
except metadata.PackageNotFoundError:
    pass
else:
    raise ImportError(
        f"PilotChain's gsy-e plug-in (pilotchain-gsy-plugin) and Grid Singularity's gsy-dex "
        f"{_gsy_dex.version} are both present in this environment and both provide "
        f"gsy_dex.trade_store.market_interface; uninstall both "
        f"(pip uninstall pilotchain-gsy-plugin gsy-dex) and install only the one gsy-e should "
        f"use.")

from pilotchain_gsy_plugin import SubstrateBlockchainInterface

__all__ = ["SubstrateBlockchainInterface"]

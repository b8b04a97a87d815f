"""Where gsy-e imports its blockchain interface from; the plug-in lives in the bridge."""

from bridge.gsy_plugin import SubstrateBlockchainInterface

__all__ = ["SubstrateBlockchainInterface"]

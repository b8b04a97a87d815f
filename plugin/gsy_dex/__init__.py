"""The import path gsy-e's ``--enable-bc`` expects, provided by PilotChain's plug-in
(``pilotchain-gsy-plugin``), not by Grid Singularity's gsy-dex:
``gsy_dex.trade_store.market_interface.SubstrateBlockchainInterface``.

The two distributions install the same top-level name, so they cannot share an environment;
``scripts/install-plugin`` refuses an environment that has gsy-dex, and
``market_interface`` refuses to load next to it.
"""

"""The import path gsy-e's ``--enable-bc`` expects, provided by PilotChain (not Grid
Singularity's gsy-dex): ``gsy_dex.trade_store.market_interface.SubstrateBlockchainInterface``.
"""

"""The gsy-e -> Settlement bridge: a Redis Stream of trades settled on PilotChain.

The other end of the stream, gsy-e's plug-in, is a distribution of its own (``plugin/``,
``pilotchain_gsy_plugin``) installed into gsy-e's environment; nothing here imports it.
"""

"""The gsy-e -> Settlement bridge: a Redis Stream of trades settled on PilotChain.

Kept empty on purpose: the gsy-e plug-in (``bridge.gsy_plugin``) is imported inside gsy-e's
own environment, which has redis-py but not web3.
"""

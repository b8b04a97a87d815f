"""Running the native stack: ``./scripts/up``, ``down``, ``status`` and the ``pilotchain`` CLI.

The top of the import graph: it may import the chain core and every service; nothing imports it
(tests and benchmarks aside).
"""

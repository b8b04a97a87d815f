"""A stream-to-chain worker, shared by the services above it (the bridge, the meter ingest, the
slot closer): Redis stream consumption with a consumer group, acknowledgements and dead
letters, the single-writer lock, batching, the gas budget, pipelined sending, receipts,
health, metrics, the HTTP endpoint that serves them and the command-line edge.

It knows nothing of trades or readings: a service hands it a codec (:class:`worker.loop.Codec`)
that says what differs. It imports only the core (``pilotchain``), never a service.
"""

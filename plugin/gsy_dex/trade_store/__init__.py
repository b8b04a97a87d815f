"""See ``gsy_dex.trade_store.market_interface``."""

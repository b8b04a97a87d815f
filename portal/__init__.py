"""The participant portal's foundation: an indexer that follows the Settlement contract's
events into a database (SQLite by default, PostgreSQL when ``PORTAL_DATABASE_URL`` names one),
so pages answer without scanning the chain."""

"""Everything that talks to the database below the read models and the ledger: the
event store's recorders, the one reader of the raw event log, the engines, bulk row
writes, the classification of database faults, every advisory lock (the table of keys,
the writers' lock, the projection lease) and the schema migrations (Alembic) of every
table. Only ``migrate`` imports from above (the tables it migrates)."""

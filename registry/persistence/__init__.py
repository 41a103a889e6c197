"""Everything that talks to the database below the read models: the event store's
recorders, the classification of database faults, the writers' advisory lock, and the
schema migrations (Alembic) of every table."""

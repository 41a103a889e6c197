"""Alembic migrations: the only owner of the registry's DDL (event store and read models).

A package (not just a directory) so that ``pip install .`` ships it beside ``registry``:
``registry.persistence.migrate`` finds it by import, from any working directory.
"""

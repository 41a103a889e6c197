"""The benchmark suite: `registry bench` (or `python -m bench.suite`).

Modules: ``run`` (the command and the order of scenarios), ``procs`` (processes under
test, their memory and CPU), ``callers`` (client processes), ``api`` (gRPC callers),
``raw`` (the plain-psycopg baseline), ``generate`` (a long log, in-process),
``national`` (the compliance year) and ``report`` (table, JSON, validation).
"""

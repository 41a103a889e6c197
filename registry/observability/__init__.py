"""Observability building blocks: Prometheus metrics and structured (JSON) logs.

Kept free of gRPC and of the registry's own modules, so the server, the projection
worker and the CLI can all use them without import cycles (docs/observability.md).
"""

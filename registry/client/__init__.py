"""The registry's Python gRPC client: what an exchange, an operator's script and the
``registry`` command's remote commands use to call a running server."""

from registry.client.registry_client import (
    CHANNEL_OPTIONS,
    DEFAULT_BATCH,
    RETRYABLE,
    SERVICE_CONFIG,
    ErrorDetails,
    RegistryClient,
    UnitsSpec,
    error_details,
    open_channel,
    unit_class,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_BATCH",
    "RETRYABLE",
    "SERVICE_CONFIG",
    "ErrorDetails",
    "RegistryClient",
    "UnitsSpec",
    "error_details",
    "open_channel",
    "unit_class",
]

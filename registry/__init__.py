"""National carbon emissions registry backend."""

__version__ = "0.1.0"

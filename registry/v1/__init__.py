"""Generated gRPC and protobuf code for the ``registry.v1`` API (from ``protos/``).

The ``*_pb2*.py(i)`` modules here are generated at install time by ``setup.py`` and are
not committed; after editing a proto, reinstall (``pip install -e .``) to regenerate.
"""

"""gRPC servicers and server bootstrap (thin: protobuf <-> application)."""

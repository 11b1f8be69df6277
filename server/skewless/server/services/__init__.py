"""One servicer per gRPC service of the v1 contract."""

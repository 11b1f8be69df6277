"""skewless Python client: online lookups and historical retrieval over gRPC."""

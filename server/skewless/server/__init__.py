"""The skewless gRPC server: every v1 service, health, reflection, metrics and workers."""

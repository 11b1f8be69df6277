"""The skewless server: gRPC services, configuration and the command line."""

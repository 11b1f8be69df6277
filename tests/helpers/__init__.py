"""Helpers the tests share that start real processes (e.g. an S3-compatible server)."""

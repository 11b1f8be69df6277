"""The offline engine and store: feature history, window queries, point-in-time joins."""

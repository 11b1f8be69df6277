"""The offline engine: definitions, transformations, point-in-time joins, offline storage."""

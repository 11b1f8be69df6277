"""The online store: latest feature values per entity in Redis."""

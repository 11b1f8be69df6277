"""Helpers the tests share: repositories built with the definitions API, real servers."""

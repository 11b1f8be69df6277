"""The core every stage shares: errors, configuration, value types and names."""

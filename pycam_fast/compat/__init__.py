"""Compatibility layers that reproduce other libraries' numbers exactly (quirks included)."""

"""Synthetic customers and a response simulator with a known true effect (demo and tests)."""

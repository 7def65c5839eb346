"""Measurement: experiment design and analysis, media-mix model, attribution, reports."""

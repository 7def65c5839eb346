"""Temporal activities: the loop's I/O, as methods of classes that receive their dependencies."""

"""The connector tests use the stage tests' CDP, activity environment and cycle references."""

from tests.stages.conftest import cycle_ref, engine, env

__all__ = ["cycle_ref", "engine", "env"]

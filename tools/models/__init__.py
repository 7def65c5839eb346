"""Decisioning models: CLV, bandits, next best action, off-policy evaluation, propensity and
uplift, send-time optimisation, a model registry and drift checks."""

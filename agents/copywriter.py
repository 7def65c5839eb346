"""The copywriter agent: a pydantic-ai Agent with a typed draft as its output."""

from __future__ import annotations

from functools import cache

from pydantic_ai import Agent

from tools.content.models import CopyDraft


@cache
def copywriter_agent() -> Agent[None, CopyDraft]:
    """The model, instructions and prompt come per run, from the router and the template."""
    return Agent(
        output_type=CopyDraft,
        name="copywriter",
        # One retry covers a malformed structured answer; guard revisions are counted apart.
        retries=1,
        defer_model_check=True,
    )

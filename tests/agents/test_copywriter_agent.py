from __future__ import annotations

from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

from agents.copywriter import copywriter_agent
from tools.content.models import CopyDraft


def test_copywriter_agent_has_typed_output_and_stable_name() -> None:
    agent = copywriter_agent()
    assert isinstance(agent, Agent) and agent.name == "copywriter"
    result = agent.run_sync("write", model=TestModel())
    assert isinstance(result.output, CopyDraft)

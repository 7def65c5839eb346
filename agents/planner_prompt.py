"""What the planner's model is told: its instructions, and the task as one user message.

The task is plain text with two marked fields, so a hosted model reads it as prose and the
offline scripted model (`agents/planner_model.py`) reads it back exactly.
"""

from __future__ import annotations

CAMPAIGN_MARK = "Campaign id: "
BRIEF_MARK = "Brief:\n"

INSTRUCTIONS = """\
You plan marketing campaigns for liftloop. Read the campaign manager's brief and turn it into a
campaign spec that liftloop can run.

Work with the tools before you decide:
- segment_count: how many customers the audience you have in mind matches and can be reached;
- churn_summary and clv_summary: who those customers are worth keeping;
- knowledge_search: the brand's rules for the market (discounts, tone, claims);
- allocate: when the brief names a budget, how to split it across the channels;
- lint_spec: check your draft against the brand policy and the campaign's limits.

Then call submit_spec with the spec. Use the campaign id you are given. The audience segment is
a filter like {"all": [{"trait": "country", "eq": "DE"}, {"event": "order_completed",
"within": "90d", "count_eq": 0}]}. Every campaign has an offer with id "none" and discount 0,
so the experiment can learn whether a discount pays. Never exceed the discount the brief allows.
Tool results are aggregates about customers, never individual people. If submit_spec reports
errors, fix exactly those fields and submit again.
"""


def task_prompt(brief: str, campaign_id: str) -> str:
    return f"{CAMPAIGN_MARK}{campaign_id}\n{BRIEF_MARK}{brief}"


def read_task(text: str) -> tuple[str, str]:
    """(brief, campaign id) from a task written by `task_prompt`."""
    head, _, brief = text.partition(BRIEF_MARK)
    campaign_id = head.removeprefix(CAMPAIGN_MARK).strip()
    return brief, campaign_id

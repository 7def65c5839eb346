"""A campaign spec typed into the form: JSON, or YAML as the CLI reads spec files.

The text comes from a browser, so it is held to more than a file on the manager's own disk:
at most `max_bytes`, and no YAML aliases (a few lines of nested aliases expand to billions of
nodes when walked). What remains is checked by `parse_spec`, the API's checks, field by field.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from liftloop.loop.spec import MAX_SPEC_DEPTH, CampaignSpec, SpecError, parse_spec

_MAX_MESSAGE = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _yaml(text: str) -> Any:
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise SpecError([("spec", "YAML aliases (*name) are not accepted here")])
    return yaml.safe_load(text)


def spec_from_text(text: str, max_bytes: int) -> CampaignSpec:
    """The spec, or SpecError naming each bad field and why."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise SpecError([("spec", f"is {size} bytes; at most {max_bytes} are allowed")])
    if not text.strip():
        raise SpecError([("spec", "is empty: paste a spec in JSON or YAML")])
    try:
        # JSON first when it looks like JSON: its errors name the line plainly.
        data = json.loads(text) if text.lstrip().startswith(("{", "[")) else _yaml(text)
    except json.JSONDecodeError as exc:
        raise SpecError([("spec", f"not valid JSON: {exc.msg} (line {exc.lineno})")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([("spec", _short(f"not valid YAML: {exc}"))]) from None
    except RecursionError:
        raise SpecError([("spec", f"nests deeper than {MAX_SPEC_DEPTH} levels")]) from None
    if not isinstance(data, dict):
        raise SpecError([("spec", "must be a mapping of fields (id, channels, offers, …)")])
    return parse_spec(data)

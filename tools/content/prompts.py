"""Versioned prompt templates stored as YAML files, with declared variables and checks."""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.content.errors import ContentError
from tools.content.models import CopyChannel, SlotSpec
from tools.rag.models import DocKind

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
Task = Literal["long_copy", "subject_line"]
# `{name}` is a template variable; `{{name}}` is a personal-data slot that passes through untouched.
_VARIABLE = re.compile(r"(?<!\{)\{([a-z_][a-z0-9_]*)\}(?!\})")
SLOT = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")


class TemplateVariable(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    required: bool = False
    default: str = ""
    description: str = ""


class RetrievalStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    purpose: str
    kinds: tuple[DocKind, ...]
    k: int = Field(default=5, ge=1, le=100)
    query: str


class TemplateLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    # 0 means the field must stay empty (an SMS has no subject, a push no preheader).
    subject_max: int = Field(default=60, ge=0)
    preheader_max: int = Field(default=100, ge=0)
    body_max: int = Field(default=1500, ge=0)
    # How many characters a slot counts for once the send stage fills it (a link's length),
    # where the length of the message as sent matters: an SMS must fit one message.
    slot_chars: dict[str, int] = Field(default_factory=dict)


class PromptTemplate(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    version: str
    description: str = ""
    channel: CopyChannel
    task: Task = "long_copy"
    variables: tuple[TemplateVariable, ...] = ()
    slots: tuple[SlotSpec, ...] = ()
    limits: TemplateLimits = TemplateLimits()
    required_elements: tuple[str, ...] = ()
    banned_phrases: tuple[str, ...] = ()
    retrieval: tuple[RetrievalStep, ...] = ()
    instructions: str
    prompt: str

    @property
    def digest(self) -> str:
        """SHA-256 of the validated content as canonical JSON: YAML comments and layout do not
        count, but any edit does, so a prompt changed without a new version is not released."""
        canonical = json.dumps(
            self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def render(self, text: str, values: dict[str, str], *, check_required: bool = True) -> str:
        """Fill `{variable}`s; every variable used must be declared and given or defaulted."""
        declared = {v.name: v for v in self.variables}
        missing = [
            v.name
            for v in self.variables
            if check_required and v.required and not str(values.get(v.name, "")).strip()
        ]
        if missing:
            raise ContentError(f"vars.{missing[0]}", f"required by template {self.id}")

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in declared:
                raise ContentError(f"template.{self.id}", f"uses undeclared variable {name!r}")
            return str(values.get(name) or declared[name].default)

        return _VARIABLE.sub(fill, text)


def load_template_file(path: Path) -> PromptTemplate:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PromptTemplate.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ContentError(str(path.name), f"invalid YAML ({exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ContentError(f"{path.name}:{where}", first["msg"]) from exc


class PromptLibrary:
    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        self._templates: dict[str, PromptTemplate] = {}
        for path in sorted(directory.glob("*.yaml")):
            template = load_template_file(path)
            if template.id in self._templates:
                raise ContentError(f"template.{template.id}", f"defined twice ({path.name})")
            self._templates[template.id] = template

    def get(self, template_id: str) -> PromptTemplate:
        try:
            return self._templates[template_id]
        except KeyError:
            known = ", ".join(sorted(self._templates))
            raise ContentError(
                "template_id", f"unknown template {template_id!r}; known: {known}"
            ) from None

    def ids(self) -> list[str]:
        return sorted(self._templates)


@cache
def default_library() -> PromptLibrary:
    return PromptLibrary()

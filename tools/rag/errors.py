from __future__ import annotations

from pathlib import Path


class KnowledgeError(ValueError):
    """Bad input to the knowledge base; the message starts with the offending field or path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PathRefusedError(KnowledgeError):
    """Ingestion refused to read a path; `code` names why (it is the failure's `error`)."""

    code = "path_refused"

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(str(path), reason)
        self.path = str(path)


class SymlinkRefusedError(PathRefusedError):
    """A symbolic link (to a file or a directory): ingestion never follows one."""

    code = "symlink_refused"


class OutsideRootError(PathRefusedError):
    """A path that resolves outside the folder ingestion was given."""

    code = "outside_root"


class NotRegularFileError(PathRefusedError):
    """A device, FIFO, socket or anything else that is not a regular file or a directory."""

    code = "not_regular_file"


class MissingPathError(PathRefusedError):
    """A path that does not exist."""

    code = "not_found"

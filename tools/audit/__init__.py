"""The tamper-evident audit log: an append-only, hash-chained table in the CDP database.

- `AuditLog.append` adds an entry; `AuditLog.checkpoint` signs the chain's head.
- `verify_chain` walks the chain and its checkpoints and names the first bad entry.
- `timeline` and `as_csv` read entries back for an auditor.
"""

from tools.audit.chain import AuditEvent, AuditLog, canonical
from tools.audit.read import AuditEntryView, as_csv, timeline
from tools.audit.verify import ChainReport, verify_chain

__all__ = [
    "AuditEntryView",
    "AuditEvent",
    "AuditLog",
    "ChainReport",
    "as_csv",
    "canonical",
    "timeline",
    "verify_chain",
]

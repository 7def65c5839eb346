"""The keys of an installation: the API key, the knowledge snapshot signing key and the approval
signing key (the proof that a decision came through liftloop's own approval path).

Each is its setting when one is given (`LIFTLOOP_API_KEYS`, `LIFTLOOP_KNOWLEDGE_SIGNING_KEY`,
`LIFTLOOP_APPROVAL_SIGNING_KEY`): explicit values win, for production. Otherwise it is a random
key in a file under `<data_dir>/secrets/`, made on first use (`liftloop up`, the API, the worker,
a command that needs it) and read afterwards. There is no usable default: the values this
project ever published (`dev-key`, `change-me`, the old default signing key) are refused with
an error naming the setting, unless `LIFTLOOP_DEV_MODE=true`.

Files are private from the moment they exist: a directory is made with mode 0700 and a key
file with 0600 (`os.open` with the mode, so no umask widens it and no window of wider
permissions opens), written in full under a temporary name and then linked into place, so a
concurrent reader sees the whole key or none. The entry points set the process umask to 0o077
(`set_private_umask`), which keeps every other file of the data directory private too.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from liftloop.settings import Settings

log = logging.getLogger("liftloop.credentials")

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
API_KEY_FILE = "api-key"
APPROVAL_KEY_FILE = "approval-signing-key"
AUDIT_KEY_FILE = "audit-signing-key"
KNOWLEDGE_KEY_FILE = "knowledge-signing-key"
DEV_MODE_SETTING = "LIFTLOOP_DEV_MODE"
# Values published in this project's code, docs and examples: everyone knows them.
PUBLIC_VALUES = frozenset({"dev-key", "change-me", "liftloop-dev-signing-key"})


class InsecureSettingError(ValueError):
    """A key setting holds a public value outside dev mode, or a key file is unusable."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def set_private_umask() -> int:
    """Make every file and directory this process creates private to its user; returns the
    previous umask. The entry points (the console script, `python -m liftloop.cli`) call it."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path` as a directory, each missing part made with mode 0700."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, DIR_MODE)
    return path


def _tighten(path: Path) -> None:
    """Mode 0700 on a directory of ours that others may enter (made by an older version or a
    wider umask). A directory of another user, or a shared one like /tmp (sticky), stays."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return
    if st.st_mode & stat.S_ISVTX or not st.st_mode & 0o077:
        return
    os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)


def secure_data_dir(settings: Settings) -> Path:
    """The data directory and its `secrets/` directory, both made or kept private (0700).

    The secrets directory must be a real directory (not a link) that only its owner can
    enter; anything else is refused rather than written into."""
    private_dir(settings.data_dir)
    _tighten(settings.data_dir)
    directory = settings.secrets_dir
    private_dir(directory)
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureSettingError(str(directory), "is not a directory (a link is refused)")
    if st.st_uid != os.geteuid():
        raise InsecureSettingError(str(directory), "belongs to another user")
    if st.st_mode & 0o077:
        os.chmod(directory, DIR_MODE)
    return directory


def _read_key(path: Path) -> str | None:
    """The key in `path`, or None when there is no such file. A file others could read is made
    private (0600); a link, a non-regular file or an empty file is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InsecureSettingError(str(path), "is a symbolic link; refused") from None
        raise
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InsecureSettingError(str(path), "is not a regular file")
        if st.st_mode & 0o077:
            os.fchmod(f.fileno(), FILE_MODE)
        value = f.read().strip()
    if not value:
        raise InsecureSettingError(str(path), "is empty; delete it to have a new key made")
    return value


def _write_new_key(directory: Path, name: str) -> str:
    """A new random key in `directory/name`, unless another process made that file first (its
    key is returned then). The file is complete before it appears under its name."""
    value = secrets.token_urlsafe(32)
    path = directory / name
    temporary = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(temporary, flags, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            found = _read_key(path)
            if found is None:  # removed in between: try once more from the start
                return _write_new_key(directory, name)
            return found
    finally:
        temporary.unlink(missing_ok=True)
    return value


def _generated(settings: Settings, name: str, *, create: bool = True) -> str | None:
    directory = secure_data_dir(settings) if create else settings.secrets_dir
    found = _read_key(directory / name)
    if found is not None or not create:
        return found
    return _write_new_key(directory, name)


def _checked(settings: Settings, setting: str, value: str) -> str:
    if value in PUBLIC_VALUES and not settings.dev_mode:
        raise InsecureSettingError(
            setting,
            f"{value!r} is a public development value and no key; set a key of your own, or "
            f"leave {setting} unset to have one generated in {settings.secrets_dir} "
            f"({DEV_MODE_SETTING}=true accepts it for development)",
        )
    return value


def api_keys(settings: Settings, *, create: bool = True) -> list[str]:
    """The keys the API accepts: `LIFTLOOP_API_KEYS`, else the generated key (none when the
    file does not exist and `create` is False)."""
    explicit = [k.get_secret_value() for k in settings.api_keys if k.get_secret_value()]
    if explicit:
        return [_checked(settings, "LIFTLOOP_API_KEYS", k) for k in explicit]
    found = _generated(settings, API_KEY_FILE, create=create)
    return [found] if found else []


def _signing_key(settings: Settings, setting: str, value: str, name: str) -> bytes:
    if value:
        return _checked(settings, setting, value).encode("utf-8", "surrogatepass")
    found = _generated(settings, name)
    if not found:  # cannot happen: a missing file is created
        raise InsecureSettingError(setting, f"no key in {settings.secrets_dir / name}")
    return found.encode()


def knowledge_signing_key(settings: Settings) -> bytes:
    """The HMAC key of knowledge snapshots: `LIFTLOOP_KNOWLEDGE_SIGNING_KEY`, else generated."""
    value = settings.knowledge_signing_key.get_secret_value()
    return _signing_key(settings, "LIFTLOOP_KNOWLEDGE_SIGNING_KEY", value, KNOWLEDGE_KEY_FILE)


def approval_signing_key(settings: Settings) -> bytes:
    """The HMAC key of approval proofs: `LIFTLOOP_APPROVAL_SIGNING_KEY`, else generated."""
    value = settings.approval_signing_key.get_secret_value()
    return _signing_key(settings, "LIFTLOOP_APPROVAL_SIGNING_KEY", value, APPROVAL_KEY_FILE)


def audit_signing_key(settings: Settings) -> bytes:
    """The HMAC key that seals the audit log: `LIFTLOOP_AUDIT_SIGNING_KEY`, else generated."""
    value = settings.audit_signing_key.get_secret_value()
    return _signing_key(settings, "LIFTLOOP_AUDIT_SIGNING_KEY", value, AUDIT_KEY_FILE)


@dataclass(frozen=True)
class Credentials:
    """Every key, resolved, and where each came from: a setting's name, or "file" (then the
    file of that name in `directory`)."""

    api_keys: tuple[str, ...]
    knowledge_signing_key: bytes = field(repr=False)
    approval_signing_key: bytes = field(repr=False)
    audit_signing_key: bytes = field(repr=False)
    sources: dict[str, str]
    directory: Path
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: where the keys are (never the keys themselves)."""
        files = sorted(name for name, src in self.sources.items() if src == "file")
        named = sorted(src for src in self.sources.values() if src != "file")
        parts = []
        if files:
            parts.append(f"{', '.join(files)} in {self.directory} (mode 0600)")
        if named:
            parts.append("from " + ", ".join(named))
        return "keys: " + "; ".join(parts)


def log_warnings(credentials: Credentials) -> None:
    """The warnings of dev mode, in a service's log (the API's, the worker's)."""
    for warning in credentials.warnings:
        log.warning(warning)


def ensure_credentials(settings: Settings) -> Credentials:
    """Every key, the missing ones generated: what `liftloop up`, the API and the worker call
    at start, so that a public value fails the start with the setting's name."""
    keys = api_keys(settings)
    knowledge = knowledge_signing_key(settings)
    approval = approval_signing_key(settings)
    audit = audit_signing_key(settings)
    explicit = {
        API_KEY_FILE: ("LIFTLOOP_API_KEYS", any(k.get_secret_value() for k in settings.api_keys)),
        KNOWLEDGE_KEY_FILE: (
            "LIFTLOOP_KNOWLEDGE_SIGNING_KEY",
            bool(settings.knowledge_signing_key.get_secret_value()),
        ),
        APPROVAL_KEY_FILE: (
            "LIFTLOOP_APPROVAL_SIGNING_KEY",
            bool(settings.approval_signing_key.get_secret_value()),
        ),
        AUDIT_KEY_FILE: (
            "LIFTLOOP_AUDIT_SIGNING_KEY",
            bool(settings.audit_signing_key.get_secret_value()),
        ),
    }
    sources = {name: setting if given else "file" for name, (setting, given) in explicit.items()}
    public = [
        setting
        for setting, value in (
            ("LIFTLOOP_API_KEYS", bool(PUBLIC_VALUES.intersection(keys))),
            ("LIFTLOOP_KNOWLEDGE_SIGNING_KEY", knowledge.decode(errors="replace") in PUBLIC_VALUES),
            ("LIFTLOOP_APPROVAL_SIGNING_KEY", approval.decode(errors="replace") in PUBLIC_VALUES),
            ("LIFTLOOP_AUDIT_SIGNING_KEY", audit.decode(errors="replace") in PUBLIC_VALUES),
        )
        if value
    ]
    warnings = tuple(
        f"{setting} holds a public development value ({DEV_MODE_SETTING}=true): anyone can use it"
        for setting in public
    )
    return Credentials(
        tuple(keys), knowledge, approval, audit, sources, settings.secrets_dir, warnings
    )

"""Which directories a phone may turn into a project.

Every check runs on the resolved real path, so a symlink inside an allowed root
that points at ``/etc`` is refused like ``/etc`` itself.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import attrs

from .errors import PathRefused

# Directories that belong to the operating system; a project there would let a
# phone point Claude at the machine's own configuration or binaries.
SYSTEM_DIRECTORIES: tuple[Path, ...] = tuple(
    Path(p)
    for p in (
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/proc",
        "/run",
        "/sbin",
        "/sys",
        "/usr",
        "/var/cache",
        "/var/lib",
        "/var/log",
        "/var/run",
        "/var/spool",
    )
)


_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


# Linux's limits (NAME_MAX, PATH_MAX): checked here, so a long path gets a reason that
# names the limit rather than whatever system call first trips over it.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4095


def _invalid(path: str, reason: str) -> PathRefused:
    return PathRefused(path, reason)


def os_reason(error: OSError) -> str:
    """What the file system said, in words (``str(error)`` would repeat the path)."""
    if error.errno is not None:
        return os.strerror(error.errno)
    return error.strerror or type(error).__name__


def utf8_encodable(text: str) -> bool:
    """False for names holding surrogate escapes: bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_length(raw: str, real: str | None = None) -> None:
    """PathRefused when ``raw`` (or the ``real`` path it resolved to) breaks the file
    system's length limits, which the kernel would answer with ENAMETOOLONG."""
    encoded = os.fsencode(raw if real is None else real)
    subject = "is" if real is None else "resolves to a path"
    if len(encoded) > MAX_PATH_BYTES:
        raise _invalid(raw, f"{subject} longer than {MAX_PATH_BYTES} bytes")
    if any(len(part) > MAX_NAME_BYTES for part in encoded.split(b"/")):
        has = "has" if real is None else "resolves to a path with"
        raise _invalid(raw, f"{has} a component longer than {MAX_NAME_BYTES} bytes")


def is_within(path: Path, parent: Path) -> bool:
    """True when ``path`` is ``parent`` or below it (both already resolved)."""
    return path == parent or parent in path.parents


@attrs.frozen
class PathPolicy:
    allowed_roots: tuple[Path, ...]
    server_root: Path
    data_dir: Path
    protected: tuple[Path, ...] = ()
    system_directories: tuple[Path, ...] = SYSTEM_DIRECTORIES

    @classmethod
    def build(
        cls,
        allowed_roots: Iterable[Path],
        server_root: Path,
        data_dir: Path,
        protected: Iterable[Path] = (),
    ) -> PathPolicy:
        """``protected``: more server directories (the certificate's, the token's) that a
        project may neither be inside of nor contain."""
        real = lambda p: Path(os.path.realpath(p))  # noqa: E731
        return cls(
            allowed_roots=tuple(real(r) for r in allowed_roots),
            server_root=real(server_root),
            data_dir=real(data_dir),
            protected=tuple(real(p) for p in (data_dir, *protected)),
            system_directories=tuple(
                dict.fromkeys(p for d in SYSTEM_DIRECTORIES for p in (d, real(d)))
            ),
        )

    def resolve(self, raw: str, *, may_be_missing: bool = False) -> Path:
        """The real path ``raw`` names, or PathRefused saying which rule it broke.

        Nothing a client sends gets past here as anything but PathRefused: what the file
        system says (EACCES, ENAMETOOLONG, ELOOP...) is a reason too."""
        if not raw.startswith("/"):
            raise _invalid(raw, "must be an absolute path")
        if any(unicodedata.category(c) in _INVISIBLE for c in raw):
            # C0/C1 controls, bidi overrides, line separators: they make a path on the
            # phone's screen look like another one.
            raise _invalid(raw, "contains control characters")
        if ".." in raw.split("/"):
            raise _invalid(raw, "must not contain '..' segments")
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(raw.encode("utf-8", "replace").decode(), "not valid UTF-8") from None
        check_length(raw)
        try:
            real = Path(os.path.realpath(raw))
        except OSError as e:
            raise _invalid(raw, f"cannot be resolved: {os_reason(e)}") from None
        if real == Path("/"):
            raise _invalid(raw, "the root directory cannot be a project")
        if not any(is_within(real, root) for root in self.allowed_roots):
            roots = ", ".join(str(r) for r in self.allowed_roots)
            raise _invalid(raw, f"outside the allowed roots ({roots})")
        if any(is_within(real, d) or is_within(d, real) for d in self.system_directories):
            raise _invalid(raw, "system directories cannot be projects")
        if real == self.server_root or any(is_within(real, d) for d in self.protected):
            raise _invalid(raw, "the server's own directory cannot be a project")
        if any(is_within(d, real) for d in (self.data_dir, *self.protected)):
            raise _invalid(raw, "contains the server's data directory")
        if not utf8_encodable(str(real)):
            # A name in another encoding (or none) could neither be shown on the phone nor
            # written to the history, which is JSON; nor passed on to claude as --add-dir.
            shown = os.fsencode(real).decode("utf-8", "backslashreplace")
            raise _invalid(raw, f"resolves to a name that is not valid UTF-8 ({shown})")
        check_length(raw, str(real))
        try:
            exists = real.exists()
            is_dir = exists and real.is_dir()
        except OSError as e:
            raise _invalid(raw, f"cannot be checked: {os_reason(e)}") from None
        if exists:
            if not is_dir:
                raise _invalid(raw, "not a directory")
        elif not may_be_missing:
            raise _invalid(raw, "does not exist (send create: true to make it)")
        return real

"""The ``preview`` of a permission prompt (SPEC §10), built by the server so the phone can
judge a prompt without reading files: for Edit, MultiEdit and Write a unified diff of the
file as it is now against the file as the tool would leave it; for Bash the command.

Pure apart from reading the one file, and that goes through an injectable reader. It is
synchronous on purpose: the caller runs it off the reactor thread. Nothing here guesses:
an edit the CLI would refuse (old_string missing or ambiguous) is said so, not diffed.

Decisions:

- Other tools get no preview (``None``): the Record already carries the whole ``input``,
  so a JSON dump of it would only repeat it.
- A path outside the project is still previewed (the CLI decides where it writes; the
  phone must see it) and marked ``outside_project``. Relative paths are resolved against
  the project directory, symlinks are followed and the note names the target.
- Only regular files are read, never anything under /proc, /sys or /dev, and never more
  than ``Limits.file_bytes``. When the file cannot be shown (binary, too large,
  unreadable, a directory) the preview is a ``diff`` with an empty ``diff`` and a
  ``note`` saying why, so the phone has one shape to render.
- The diff is cut at whole lines, at most ``Limits.preview_bytes`` UTF-8 bytes in all
  (the SPEC's 65,536) and ``Limits.preview_lines`` lines, ending in "… N more lines".
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from pocket_agent.core.pathpolicy import is_within

PreviewKind = Literal["diff", "command"]

MAX_PREVIEW_BYTES = 65_536
MAX_PREVIEW_LINES = 4_000
MAX_FILE_BYTES = 1 << 20
CONTEXT_LINES = 3
# Never read from these, even through a symlink: their "regular files" are not files.
SPECIAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
# Room kept for the "… N more lines" marker inside the byte cap.
_MARKER_ROOM = 64


@attrs.frozen
class Limits:
    """The caps, one value so tests can shrink them."""

    preview_bytes: int = MAX_PREVIEW_BYTES
    preview_lines: int = MAX_PREVIEW_LINES
    file_bytes: int = MAX_FILE_BYTES


@attrs.frozen
class Preview:
    """What the phone shows beside a prompt; ``to_record`` is the Record's ``preview``."""

    kind: PreviewKind
    text: str  # the unified diff, or the command
    path: str | None = None  # the path as in the tool input (diffs)
    description: str | None = None  # Bash's description
    truncated: bool = False
    note: str | None = None  # why there is no diff, or what to know about the target
    outside_project: bool = False

    def to_record(self) -> dict[str, Any]:
        """SPEC §10's ``{kind:"diff", path, diff, truncated}`` or ``{kind:"command",
        command, description?}``, plus ``note``/``outside_project`` when they say something."""
        record: dict[str, Any] = {"kind": self.kind}
        if self.kind == "diff":
            record.update(path=self.path, diff=self.text, truncated=self.truncated)
        else:
            record["command"] = self.text
            if self.description is not None:
                record["description"] = self.description
            if self.truncated:
                record["truncated"] = True
        if self.note is not None:
            record["note"] = self.note
        if self.outside_project:
            record["outside_project"] = True
        return record


DEFAULT_LIMITS = Limits()


# What a reader found. ``real_path`` is where the path really leads (symlinks resolved).
@attrs.frozen
class Contents:
    real_path: Path
    data: bytes


@attrs.frozen
class Missing:
    real_path: Path


@attrs.frozen
class Refused:
    """Not read: a directory, a device, too large, no permission; ``reason`` says which."""

    real_path: Path
    reason: str


FileRead = Contents | Missing | Refused
Reader = Callable[[Path, int], FileRead]


def read_file(path: Path, limit: int) -> FileRead:
    """The real reader: resolve ``path``, then read it only if it is a regular file
    outside /proc, /sys and /dev and at most ``limit`` bytes. Stat before open, so a
    FIFO or a device is never opened; fstat after, so a swap in between is caught."""
    real = Path(os.path.realpath(path))
    if any(is_within(real, root) for root in SPECIAL_ROOTS):
        return Refused(real, "a special file system (/proc, /sys or /dev): not read")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return Missing(real)
    except OSError as e:
        return Refused(real, _os_reason(e))
    if not_regular := _not_regular(st.st_mode):
        return Refused(real, not_regular)
    if st.st_size > limit:
        return Refused(real, _too_large(st.st_size, limit))
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        return Missing(real)
    except OSError as e:
        return Refused(real, _os_reason(e))
    try:
        if not_regular := _not_regular(os.fstat(fd).st_mode):
            return Refused(real, not_regular)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        return Refused(real, _os_reason(e))
    finally:
        os.close(fd)
    if size > limit:
        return Refused(real, _too_large(size, limit))
    return Contents(real, b"".join(chunks))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    return "not a regular file (a device, FIFO or socket): not read"


def _too_large(size: int, limit: int) -> str:
    return f"file too large to preview ({size} bytes or more; the limit is {limit})"


def _os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "the file cannot be read (permission denied)"
    return f"the file cannot be read ({e.strerror or e})"


def build_preview(
    tool_name: str,
    tool_input: Mapping[str, Any],
    project_dir: Path,
    *,
    reader: Reader = read_file,
    limits: Limits = DEFAULT_LIMITS,
) -> Preview | None:
    """The preview of a ``can_use_tool`` request, or None for tools that have none.
    ``project_dir`` is the project's real path (as recorded at creation)."""
    if tool_name == "Bash":
        return _bash(tool_input, limits)
    if tool_name == "Write":
        return _file_preview(tool_input, project_dir, reader, limits, _write_edits)
    if tool_name == "Edit":
        return _file_preview(tool_input, project_dir, reader, limits, _single_edit)
    if tool_name == "MultiEdit":
        return _file_preview(tool_input, project_dir, reader, limits, _multi_edits)
    return None


# --- Bash -------------------------------------------------------------------------------


def _bash(tool_input: Mapping[str, Any], limits: Limits) -> Preview:
    command = tool_input.get("command")
    description = tool_input.get("description")
    if not isinstance(description, str) or not description:
        description = None
    if not isinstance(command, str):
        return Preview("command", "", description=description, note="the input has no command")
    text, truncated = cap_lines(split_lines(command), limits)
    notes = []
    if tool_input.get("run_in_background") is True:
        notes.append("runs in the background")
    if tool_input.get("dangerouslyDisableSandbox") is True:
        notes.append("asks to run outside the sandbox")
    return Preview(
        "command", text, description=description, truncated=truncated, note=_join(notes)
    )


# --- Edit, MultiEdit, Write -------------------------------------------------------------


class EditFailed(Exception):
    """An edit the CLI would refuse; the message says why, for people."""


@attrs.frozen
class Edit:
    old_string: str
    new_string: str
    replace_all: bool = False


def apply_edit(text: str, edit: Edit) -> str:
    """``text`` with ``edit`` applied the way Claude Code applies it: an exact match;
    ``replace_all`` replaces every occurrence, otherwise there must be exactly one. An
    empty old_string only fills an empty (or new) file."""
    old, new = edit.old_string, edit.new_string
    if old == new:
        raise EditFailed("old_string and new_string are the same: the edit changes nothing")
    if old == "":
        if text:
            raise EditFailed("old_string is empty (which creates a file) but the file has content")
        return new
    count = text.count(old)
    if count == 0:
        raise EditFailed("old_string was not found in the file")
    if count > 1 and not edit.replace_all:
        raise EditFailed(
            f"old_string occurs {count} times in the file; the edit needs exactly one "
            "(or replace_all)"
        )
    return text.replace(old, new) if edit.replace_all else text.replace(old, new, 1)


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """MultiEdit: each edit applies to the result of the one before; all or nothing."""
    edits = list(edits)
    for number, edit in enumerate(edits, 1):
        try:
            text = apply_edit(text, edit)
        except EditFailed as e:
            raise EditFailed(f"edit {number} of {len(edits)}: {e}") from None
    return text


# How a tool turns the current file (None: there is none) into the new one.
_Transform = Callable[[Mapping[str, Any], str | None], str]


def _write_edits(tool_input: Mapping[str, Any], before: str | None) -> str:
    content = tool_input.get("content")
    if not isinstance(content, str):
        raise EditFailed("the input has no content")
    return content


def _single_edit(tool_input: Mapping[str, Any], before: str | None) -> str:
    edit = _edit_of(tool_input)
    if before is None and edit.old_string != "":
        raise EditFailed("the file does not exist")
    return apply_edit(before or "", edit)


def _multi_edits(tool_input: Mapping[str, Any], before: str | None) -> str:
    raw = tool_input.get("edits")
    if not isinstance(raw, list) or not raw:
        raise EditFailed("the input has no edits")
    edits = []
    for number, item in enumerate(raw, 1):
        if not isinstance(item, Mapping):
            raise EditFailed(f"edit {number} of {len(raw)} is not an object")
        try:
            edits.append(_edit_of(item))
        except EditFailed as e:
            raise EditFailed(f"edit {number} of {len(raw)}: {e}") from None
    if before is None and edits[0].old_string != "":
        raise EditFailed("the file does not exist")
    return apply_edits(before or "", edits)


def _edit_of(item: Mapping[str, Any]) -> Edit:
    old, new = item.get("old_string"), item.get("new_string")
    if not isinstance(old, str) or not isinstance(new, str):
        raise EditFailed("the input has no old_string/new_string")
    return Edit(old, new, item.get("replace_all") is True)


def _file_preview(
    tool_input: Mapping[str, Any],
    project_dir: Path,
    reader: Reader,
    limits: Limits,
    transform: _Transform,
) -> Preview:
    raw_path = tool_input.get("file_path")
    if not isinstance(raw_path, str) or not raw_path or "\0" in raw_path:
        shown = raw_path if isinstance(raw_path, str) else None
        return Preview("diff", "", path=shown, note="the input has no usable file_path")
    path = Path(os.path.normpath(project_dir / os.path.expanduser(raw_path)))
    found = reader(path, limits.file_bytes)
    real = found.real_path
    # Where the file really is decides; the CLI normalises the path the same way.
    outside = not is_within(real, project_dir)
    notes = []
    if real != path:
        notes.append(f"resolves through a symlink to {_printable(str(real))}")
    if outside:
        notes.append("outside the project directory")

    def failed(reason: str) -> Preview:
        return Preview(
            "diff", "", path=raw_path, note=_join([reason, *notes]), outside_project=outside
        )

    before: str | None
    if isinstance(found, Refused):
        return failed(found.reason)
    if isinstance(found, Missing):
        before = None
    else:
        decoded = _decode(found.data)
        if decoded is None:
            return failed("a binary file: not previewed")
        before = decoded
    try:
        after = transform(tool_input, before)
    except EditFailed as e:
        return failed(str(e))
    label = _label(path, project_dir)
    text, truncated = unified_diff(
        before, after, "/dev/null" if before is None else "a/" + label, "b/" + label, limits
    )
    if before is None:
        notes.insert(0, "creates a new file" if after else "creates a new, empty file")
    elif not text:
        notes.insert(0, "no change to the file")
    return Preview(
        "diff",
        text,
        path=raw_path,
        truncated=truncated,
        note=_join(notes),
        outside_project=outside,
    )


def _decode(data: bytes) -> str | None:
    """The file's text, or None when it is binary (a NUL byte, or not UTF-8)."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _label(path: Path, project_dir: Path) -> str:
    """The diff header's path: relative inside the project, absolute outside it
    (``a//etc/hosts``, which ``patch -p1`` still reads right)."""
    shown = str(path.relative_to(project_dir)) if is_within(path, project_dir) else str(path)
    return _printable(shown)


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _join(notes: list[str]) -> str | None:
    return "; ".join(notes) if notes else None


# --- the diff and its cap ---------------------------------------------------------------

NO_NEWLINE = "\\ No newline at end of file\n"


def split_lines(text: str) -> list[str]:
    """Lines split at ``\\n`` only (as diff and the CLI see them), each keeping it."""
    lines = text.split("\n")
    last = lines.pop()
    kept = [line + "\n" for line in lines]
    if last:
        kept.append(last)
    return kept


def diff_lines(before: str | None, after: str, from_label: str, to_label: str) -> Iterator[str]:
    """``diff -u`` output, a line at a time, each ending in ``\\n`` (a last line without
    one is followed by the ``\\ No newline at end of file`` line, as diff does)."""
    old, new = split_lines(before or ""), split_lines(after)
    for line in difflib.unified_diff(old, new, from_label, to_label, n=CONTEXT_LINES):
        if line.endswith("\n"):
            yield line
        else:
            yield line + "\n"
            yield NO_NEWLINE


def unified_diff(
    before: str | None, after: str, from_label: str, to_label: str, limits: Limits
) -> tuple[str, bool]:
    """The capped diff and whether it was cut; "" when nothing changes."""
    return cap_lines(diff_lines(before, after, from_label, to_label), limits)


def utf8_size(text: str) -> int:
    # surrogatepass: a tool input may carry lone surrogates from JSON escapes.
    return len(text.encode("utf-8", "surrogatepass"))


def cap_lines(lines: Iterable[str], limits: Limits) -> tuple[str, bool]:
    """Whole lines up to the caps, then ``… N more lines``; the result, marker included,
    is at most ``limits.preview_bytes`` UTF-8 bytes. The rest is only counted."""
    kept: list[str] = []
    size = 0
    budget = limits.preview_bytes - _MARKER_ROOM
    iterator = iter(lines)
    for line in iterator:
        line_size = utf8_size(line)
        if len(kept) >= limits.preview_lines or size + line_size > budget:
            more = 1 + sum(1 for _ in iterator)
            if kept and not kept[-1].endswith("\n"):
                kept[-1] += "\n"
            kept.append(f"… {more} more line{'s' if more != 1 else ''}\n")
            return "".join(kept), True
        kept.append(line)
        size += line_size
    return "".join(kept), False

"""Tests for pocket_agent.runs.preview: the ``preview`` of a permission prompt (SPEC §10).

Most cases use an in-memory reader; the cases about what may be read (directories,
FIFOs, /proc, permissions, symlinks) use the real reader on a temporary directory."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pocket_agent.runs.preview import (
    MAX_PREVIEW_BYTES,
    Contents,
    Edit,
    EditFailed,
    FileRead,
    Limits,
    Missing,
    Preview,
    Refused,
    apply_edits,
    build_preview,
    cap_lines,
    read_file,
    split_lines,
    utf8_size,
)

PROJECT = Path("/home/me/proj")


class FakeReader:
    """Files by path; ``links`` maps a path to where it really leads."""

    def __init__(self, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
        self.files = files
        self.links = links or {}
        self.asked: list[tuple[Path, int]] = []

    def __call__(self, path: Path, limit: int) -> FileRead:
        self.asked.append((path, limit))
        real = Path(self.links.get(str(path), str(path)))
        data = self.files.get(str(real))
        if data is None:
            return Missing(real)
        if len(data) > limit:
            return Refused(real, "file too large to preview")
        return Contents(real, data)


def preview(
    tool: str,
    tool_input: dict[str, Any],
    files: dict[str, bytes] | None = None,
    *,
    links: dict[str, str] | None = None,
    limits: Limits = Limits(),  # noqa: B008
) -> Preview:
    shown = build_preview(
        tool, tool_input, PROJECT, reader=FakeReader(files or {}, links), limits=limits
    )
    assert shown is not None
    return shown


def patch(original: str, diff: str) -> str:
    """Apply a unified diff to ``original`` (a small ``patch``, strict about context)."""
    old = split_lines(original)
    out: list[str] = []
    at = 0  # index into old of the next line not yet copied
    last_was_new = False
    lines = split_lines(diff)
    i = 0
    while i < len(lines) and not lines[i].startswith("@@"):
        assert lines[i].startswith(("--- ", "+++ ")), lines[i]
        i += 1
    while i < len(lines):
        m = re.match(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@\n", lines[i])
        assert m, lines[i]
        start, count = int(m[1]), int(m[2] or 1)
        first = start - 1 if count else start
        out.extend(old[at:first])
        at = first
        i += 1
        while i < len(lines) and not lines[i].startswith("@@"):
            tag, body = lines[i][0], lines[i][1:]
            if tag == "\\":  # the line before had no newline; an old one is gone anyway
                if last_was_new:
                    out[-1] = out[-1].removesuffix("\n")
            elif tag == " ":
                assert old[at].rstrip("\n") == body.rstrip("\n")
                out.append(old[at])
                at += 1
            elif tag == "-":
                assert old[at].rstrip("\n") == body.rstrip("\n")
                at += 1
            else:
                assert tag == "+", lines[i]
                out.append(body)
            last_was_new = tag in " +"
            i += 1
    out.extend(old[at:])
    return "".join(out)


# --- Edit ---------------------------------------------------------------------------------


def test_edit_is_a_unified_diff_of_the_file_now_against_the_edit() -> None:
    files = {"/home/me/proj/src/a.py": b"one\ntwo\nthree\n"}
    shown = preview(
        "Edit",
        {"file_path": "/home/me/proj/src/a.py", "old_string": "two", "new_string": "2"},
        files,
    )
    assert shown.to_record() == {
        "kind": "diff",
        "path": "/home/me/proj/src/a.py",
        "diff": "--- a/src/a.py\n+++ b/src/a.py\n@@ -1,3 +1,3 @@\n one\n-two\n+2\n three\n",
        "truncated": False,
    }


def test_edit_says_when_old_string_is_not_found() -> None:
    shown = preview(
        "Edit",
        {"file_path": "a.py", "old_string": "four", "new_string": "4"},
        {"/home/me/proj/a.py": b"one\n"},
    )
    assert (shown.text, shown.note) == ("", "old_string was not found in the file")


def test_edit_refuses_to_guess_between_two_occurrences() -> None:
    shown = preview(
        "Edit",
        {"file_path": "a.py", "old_string": "x", "new_string": "y"},
        {"/home/me/proj/a.py": b"x\nx\n"},
    )
    assert shown.text == ""
    assert shown.note is not None and "occurs 2 times" in shown.note


def test_replace_all_replaces_every_occurrence() -> None:
    shown = preview(
        "Edit",
        {"file_path": "a.py", "old_string": "x", "new_string": "y", "replace_all": True},
        {"/home/me/proj/a.py": b"x\nx\n"},
    )
    assert patch("x\nx\n", shown.text) == "y\ny\n"


def test_an_edit_that_changes_nothing_is_said_so() -> None:
    shown = preview(
        "Edit",
        {"file_path": "a.py", "old_string": "x", "new_string": "x"},
        {"/home/me/proj/a.py": b"x\n"},
    )
    assert shown.note is not None and "changes nothing" in shown.note


def test_edit_of_a_missing_file() -> None:
    shown = preview("Edit", {"file_path": "gone.py", "old_string": "x", "new_string": "y"})
    assert (shown.text, shown.note) == ("", "the file does not exist")


def test_edit_with_an_empty_old_string_creates_the_file() -> None:
    shown = preview("Edit", {"file_path": "new.py", "old_string": "", "new_string": "hi\n"})
    assert shown.text == "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+hi\n"
    assert shown.note == "creates a new file"


def test_edit_with_an_empty_old_string_on_a_file_with_content() -> None:
    shown = preview(
        "Edit",
        {"file_path": "a.py", "old_string": "", "new_string": "hi"},
        {"/home/me/proj/a.py": b"x\n"},
    )
    assert shown.text == ""
    assert shown.note is not None and "has content" in shown.note


def test_malformed_edit_input_is_said_so() -> None:
    assert preview("Edit", {"old_string": "x", "new_string": "y"}).note == (
        "the input has no usable file_path"
    )
    shown = preview("Edit", {"file_path": "a.py", "old_string": 3}, {"/home/me/proj/a.py": b""})
    assert shown.note == "the input has no old_string/new_string"


def test_a_missing_newline_at_the_end_is_shown_as_diff_does() -> None:
    shown = preview(
        "Edit",
        {"file_path": "a.py", "old_string": "b", "new_string": "c"},
        {"/home/me/proj/a.py": b"a\nb"},
    )
    assert shown.text == (
        "--- a/a.py\n+++ b/a.py\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n"
        "+c\n\\ No newline at end of file\n"
    )
    assert patch("a\nb", shown.text) == "a\nc"


# --- MultiEdit ----------------------------------------------------------------------------


def test_multiedit_applies_edits_in_order() -> None:
    # The second edit matches only what the first one wrote.
    edits = [
        {"old_string": "one", "new_string": "uno"},
        {"old_string": "uno\ntwo", "new_string": "dos"},
    ]
    shown = preview(
        "MultiEdit", {"file_path": "a.py", "edits": edits}, {"/home/me/proj/a.py": b"one\ntwo\n"}
    )
    assert patch("one\ntwo\n", shown.text) == "dos\n"


def test_multiedit_names_the_edit_that_fails_and_shows_no_diff() -> None:
    edits = [{"old_string": "one", "new_string": "1"}, {"old_string": "zzz", "new_string": "z"}]
    shown = preview(
        "MultiEdit", {"file_path": "a.py", "edits": edits}, {"/home/me/proj/a.py": b"one\n"}
    )
    assert (shown.text, shown.note) == ("", "edit 2 of 2: old_string was not found in the file")


def test_multiedit_without_edits() -> None:
    shown = preview("MultiEdit", {"file_path": "a.py", "edits": []}, {"/home/me/proj/a.py": b""})
    assert shown.note == "the input has no edits"


# --- Write --------------------------------------------------------------------------------


def test_write_is_a_diff_against_the_current_file() -> None:
    shown = preview(
        "Write", {"file_path": "a.txt", "content": "new\n"}, {"/home/me/proj/a.txt": b"old\n"}
    )
    assert shown.text == "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-old\n+new\n"
    assert shown.note is None


def test_write_of_a_new_file_is_a_creation() -> None:
    shown = preview("Write", {"file_path": "/home/me/proj/hello.txt", "content": "hi\nthere\n"})
    assert shown.to_record() == {
        "kind": "diff",
        "path": "/home/me/proj/hello.txt",
        "diff": "--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1,2 @@\n+hi\n+there\n",
        "truncated": False,
        "note": "creates a new file",
    }


def test_write_of_an_empty_new_file() -> None:
    shown = preview("Write", {"file_path": "empty", "content": ""})
    assert (shown.text, shown.note) == ("", "creates a new, empty file")


def test_write_of_the_same_content() -> None:
    shown = preview("Write", {"file_path": "a", "content": "x\n"}, {"/home/me/proj/a": b"x\n"})
    assert (shown.text, shown.note) == ("", "no change to the file")


# --- Bash and the rest --------------------------------------------------------------------


def test_bash_shows_the_command_and_description() -> None:
    shown = preview("Bash", {"command": "rm -rf build", "description": "Clean the build"})
    assert shown.to_record() == {
        "kind": "command",
        "command": "rm -rf build",
        "description": "Clean the build",
    }


def test_bash_says_when_it_runs_in_the_background() -> None:
    shown = preview("Bash", {"command": "sleep 100", "run_in_background": True})
    assert shown.to_record() == {
        "kind": "command",
        "command": "sleep 100",
        "note": "runs in the background",
    }


def test_a_huge_command_is_cut_at_a_line() -> None:
    command = "\n".join(f"echo {i}" for i in range(20_000))
    shown = preview("Bash", {"command": command})
    assert shown.truncated and shown.to_record()["truncated"] is True
    assert utf8_size(shown.text) <= MAX_PREVIEW_BYTES
    body, marker = shown.text.rsplit("\n", 2)[0] + "\n", shown.text.splitlines()[-1]
    assert command.startswith(body)
    assert re.fullmatch(r"… \d+ more lines", marker)


@pytest.mark.parametrize("tool", ["Read", "Glob", "WebFetch", "AskUserQuestion", "mcp__x__y"])
def test_other_tools_have_no_preview(tool: str) -> None:
    assert (
        build_preview(tool, {"file_path": "/etc/passwd"}, PROJECT, reader=FakeReader({})) is None
    )


# --- limits -------------------------------------------------------------------------------


def test_a_big_diff_is_capped_with_a_marker() -> None:
    before = "".join(f"line {i}\n" for i in range(50_000))
    shown = preview(
        "Write", {"file_path": "big", "content": ""}, {"/home/me/proj/big": before.encode()}
    )
    assert shown.truncated
    assert utf8_size(shown.text) <= MAX_PREVIEW_BYTES
    assert shown.text.endswith(" more lines\n")
    kept = shown.text.splitlines()[:-1]
    more = int(shown.text.splitlines()[-1].split()[1])
    assert len(kept) + more == 50_000 + 3  # two headers, one hunk header


def test_the_line_cap_applies_too() -> None:
    before = "".join(f"{i}\n" for i in range(100))
    shown = preview(
        "Write",
        {"file_path": "big", "content": ""},
        {"/home/me/proj/big": before.encode()},
        limits=Limits(preview_lines=10),
    )
    assert shown.truncated
    assert shown.text.splitlines()[-1] == "… 93 more lines"
    assert len(shown.text.splitlines()) == 11


def test_a_file_over_the_size_cap_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 2000)
    shown = real_preview(tmp_path, "Edit", "big", limits=Limits(file_bytes=1000))
    assert shown.text == ""
    assert shown.note is not None and shown.note.startswith("file too large to preview")


@pytest.mark.parametrize("data", [b"a\0b\n", b"\xff\xfe\n"], ids=["nul", "not-utf8"])
def test_a_binary_file_is_said_so(data: bytes) -> None:
    shown = preview(
        "Write", {"file_path": "bin", "content": "text\n"}, {"/home/me/proj/bin": data}
    )
    assert (shown.text, shown.note) == ("", "a binary file: not previewed")


# --- what the real reader reads -----------------------------------------------------------


def real_preview(
    project: Path,
    tool: str,
    file_path: str,
    *,
    limits: Limits = Limits(),  # noqa: B008
) -> Preview:
    tool_input: dict[str, Any] = {"file_path": file_path, "content": "new\n"}
    if tool == "Edit":
        tool_input = {"file_path": file_path, "old_string": "x", "new_string": "y"}
    shown = build_preview(tool, tool_input, Path(os.path.realpath(project)), limits=limits)
    assert shown is not None
    return shown


def test_the_real_reader_reads_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x\n")
    shown = real_preview(tmp_path, "Edit", "a.txt")
    assert shown.text == "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-x\n+y\n"
    assert (shown.note, shown.outside_project) == (None, False)


def test_a_relative_path_is_resolved_against_the_project() -> None:
    reader = FakeReader({"/home/me/proj/sub/a.txt": b"x\n"})
    shown = build_preview(
        "Edit",
        {"file_path": "sub/../sub/a.txt", "old_string": "x", "new_string": "y"},
        PROJECT,
        reader=reader,
    )
    assert reader.asked[0][0] == Path("/home/me/proj/sub/a.txt")
    assert shown is not None and shown.path == "sub/../sub/a.txt"
    assert shown.text.startswith("--- a/sub/a.txt\n+++ b/sub/a.txt\n")


def test_a_directory_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    assert real_preview(tmp_path, "Write", "d").note == "a directory, not a file"


def test_a_fifo_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # opening it to read would block
    note = real_preview(tmp_path, "Write", "fifo").note
    assert note is not None and note.startswith("not a regular file")


def test_a_missing_file_with_the_real_reader(tmp_path: Path) -> None:
    shown = real_preview(tmp_path, "Write", "new.txt")
    assert shown.text == "--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+new\n"


def test_a_path_outside_the_project_is_previewed_and_marked(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (elsewhere / "f").write_text("old\n")
    real = os.path.realpath(elsewhere / "f")
    shown = real_preview(project, "Write", real)
    assert shown.outside_project and shown.to_record()["outside_project"] is True
    assert shown.note == "outside the project directory"
    assert shown.text.startswith(f"--- a/{real}\n+++ b/{real}\n")
    assert patch("old\n", shown.text) == "new\n"


def test_a_symlink_out_of_the_project_is_followed_and_said_so(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (elsewhere / "f").write_text("old\n")
    (project / "link").symlink_to(elsewhere / "f")
    shown = real_preview(project, "Write", "link")
    target = os.path.realpath(elsewhere / "f")
    assert shown.note == f"resolves through a symlink to {target}; outside the project directory"
    assert shown.outside_project
    assert shown.text.startswith("--- a/link\n+++ b/link\n")
    assert patch("old\n", shown.text) == "new\n"


def test_a_symlink_within_the_project_is_not_outside(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("old\n")
    (tmp_path / "link").symlink_to("f")
    shown = real_preview(tmp_path, "Write", "link")
    assert not shown.outside_project
    assert shown.note == f"resolves through a symlink to {os.path.realpath(tmp_path / 'f')}"


@pytest.mark.parametrize("target", ["/proc/self/environ", "/dev/zero", "/sys/kernel/notes"])
def test_special_file_systems_are_never_read(tmp_path: Path, target: str) -> None:
    (tmp_path / "link").symlink_to(target)
    for path in (target, "link"):
        shown = real_preview(tmp_path, "Write", path)
        assert shown.text == ""
        assert shown.note is not None and "special file system" in shown.note


def test_the_reader_itself_on_special_cases(tmp_path: Path) -> None:
    assert isinstance(read_file(Path("/proc/self/status"), 1000), Refused)
    assert read_file(tmp_path / "nope", 1000) == Missing(Path(os.path.realpath(tmp_path)) / "nope")
    (tmp_path / "f").write_bytes(b"12345")
    assert read_file(tmp_path / "f", 5) == Contents(
        Path(os.path.realpath(tmp_path / "f")), b"12345"
    )
    assert isinstance(read_file(tmp_path / "f", 4), Refused)


# --- properties of the diff builder -------------------------------------------------------

# A small alphabet, so edits often find their old_string; \r and a line without its
# newline at the end are part of it on purpose.
texts = st.text(alphabet="ab \n\r\té", max_size=200)


def diff_of(before: str, tool: str, tool_input: dict[str, Any]) -> Preview:
    return preview(tool, {"file_path": "f", **tool_input}, {"/home/me/proj/f": before.encode()})


@given(texts, st.data())
def test_an_edit_that_matches_once_patches_to_the_edited_file(before: str, data: Any) -> None:
    i = data.draw(st.integers(0, len(before)))
    j = data.draw(st.integers(i, len(before)))
    old = before[i:j]
    assume(old and before.count(old) == 1)
    new = data.draw(texts.filter(lambda s: s != old))
    shown = diff_of(before, "Edit", {"old_string": old, "new_string": new})
    # Counted as str.count counts (without overlaps, as the CLI does), "once" may still
    # overlap itself ("  " in three spaces): the edit is at the first occurrence.
    after = before.replace(old, new, 1)
    assert not shown.truncated
    assert patch(before, shown.text) == after
    assert (shown.text == "") == (after == before)


@given(texts, st.data())
def test_replace_all_patches_to_every_occurrence_replaced(before: str, data: Any) -> None:
    old = data.draw(st.text(alphabet="ab\n", min_size=1, max_size=3))
    assume(old in before)
    new = data.draw(texts.filter(lambda s: s != old))
    shown = diff_of(before, "Edit", {"old_string": old, "new_string": new, "replace_all": True})
    assert patch(before, shown.text) == before.replace(old, new)


@given(texts, st.lists(st.tuples(texts, texts), min_size=1, max_size=4))
def test_multiedit_is_the_edits_in_order(before: str, pairs: list[tuple[str, str]]) -> None:
    edits = [Edit(old, new, replace_all=True) for old, new in pairs]
    try:
        expected: str | None = apply_edits(before, edits)
    except EditFailed:
        expected = None
    raw = [
        {"old_string": e.old_string, "new_string": e.new_string, "replace_all": True}
        for e in edits
    ]
    shown = diff_of(before, "MultiEdit", {"edits": raw})
    if expected is None:
        assert shown.text == "" and shown.note is not None and shown.note.startswith("edit ")
    else:
        assert patch(before, shown.text) == expected
        # Step by step, each edit on the result of the one before.
        text = before
        for old, new in pairs:
            text = text.replace(old, new) if old else new
        assert text == expected


@given(texts, texts)
def test_write_patches_to_the_content(before: str, content: str) -> None:
    assert patch(before, diff_of(before, "Write", {"content": content}).text) == content


@given(
    st.lists(st.text(alphabet="xyé\t", max_size=40).map(lambda s: s + "\n"), max_size=80),
    st.integers(128, 1500),
    st.integers(0, 60),
)
def test_truncation_keeps_whole_lines(lines: list[str], max_bytes: int, max_lines: int) -> None:
    text, truncated = cap_lines(lines, Limits(preview_bytes=max_bytes, preview_lines=max_lines))
    full = "".join(lines)
    assert utf8_size(text) <= max_bytes
    if not truncated:
        assert text == full
        return
    *kept, marker = split_lines(text)
    assert kept == lines[: len(kept)]
    more = int(re.fullmatch(r"… (\d+) more lines?\n", marker)[1])  # type: ignore[index]
    assert len(kept) + more == len(lines)


def test_a_permission_error_on_open_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same as above where the tests run as root (who may read a mode-0 file)."""
    (tmp_path / "secret").write_text("x\n")

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    shown = real_preview(tmp_path, "Edit", "secret")
    assert (shown.text, shown.note) == ("", "the file cannot be read (permission denied)")

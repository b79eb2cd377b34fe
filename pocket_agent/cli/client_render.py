"""What ``pocket-agent-server client`` shows for each frame: plain functions from wire
data to ``rich`` renderables, plus :class:`Output`, which prints them (or the frames
themselves, one JSON line each, for scripts) and keeps the live progress line.

Everything the server relays is shown as :class:`rich.text.Text`, never as markup, so
a ``[bold]`` in Claude's output or a file name stays literal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rich.console import Console, RenderableType
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

TOOL_INPUT_WIDTH = 100
RESULT_WIDTH = 100
OK, FAIL, STOPPED = "✓", "✗", "⏹"


def clip(text: str, width: int) -> str:
    """One line of at most ``width`` characters (newlines folded to spaces)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def format_duration(ms: object) -> str:
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "—"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


def format_cost(usd: object) -> str:
    """``$0.0012`` like the web client's footer, ``—`` when Claude reported none."""
    if not isinstance(usd, int | float) or isinstance(usd, bool):
        return "—"
    return f"${usd:.4f}"


def gigabytes(size: object) -> str:
    if not isinstance(size, int | float) or isinstance(size, bool):
        return "—"
    return f"{size / 1e9:.1f} GB"


# --------------------------------------------------------------------- records


_TOOL_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "plan", "description")


def tool_summary(name: str, tool_input: object) -> str:
    """The one argument that says what a tool call does (the command, the file, ...)."""
    if not isinstance(tool_input, Mapping):
        return ""
    if name == "TodoWrite" and isinstance(tool_input.get("todos"), list):
        return f"{len(tool_input['todos'])} todos"
    if name == "AskUserQuestion" and isinstance(tool_input.get("questions"), list):
        asked = [q.get("question") for q in tool_input["questions"] if isinstance(q, Mapping)]
        texts = [q for q in asked if isinstance(q, str) and q]
        if texts:
            return clip(" / ".join(texts), TOOL_INPUT_WIDTH)
    for key in _TOOL_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return clip(value, TOOL_INPUT_WIDTH)
    return clip(json.dumps(tool_input, ensure_ascii=False), TOOL_INPUT_WIDTH)


def tool_line(block: Mapping[str, Any]) -> Text:
    name = str(block.get("name") or "tool")
    line = Text("⏺ ", style="cyan")
    line.append(name, style="bold cyan")
    summary = tool_summary(name, block.get("input"))
    if summary:
        line.append("  " + summary)
    return line


def _result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def tool_result_line(block: Mapping[str, Any]) -> Text | None:
    """A failed tool result in red; a successful one as one dim line (None when empty)."""
    text = clip(_result_text(block.get("content")), RESULT_WIDTH)
    if block.get("is_error"):
        return Text(f"  {FAIL} {text}", style="red")
    return Text(f"  ↳ {text}", style="dim") if text else None


def _blocks(line: Mapping[str, Any]) -> Sequence[Any]:
    message = line.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def claude_lines(line: Mapping[str, Any]) -> list[Text]:
    """One Claude stream-json line: the assistant's text, its tool calls, their results."""
    kind = line.get("type")
    shown: list[Text] = []
    if kind == "assistant":
        for block in _blocks(line):
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "text" and block.get("text"):
                shown.append(Text(str(block["text"])))
            elif block.get("type") == "tool_use":
                shown.append(tool_line(block))
    elif kind == "user":
        for block in _blocks(line):
            if isinstance(block, Mapping) and block.get("type") == "tool_result":
                result = tool_result_line(block)
                if result is not None:
                    shown.append(result)
    return shown  # system, result (the summary says it), control_* lines: nothing


# ---------------------------------------------------------- permission prompts


PREVIEW_INDENT = "    "


def prompt_summary(request: Mapping[str, Any]) -> str:
    """A ``permission_request``'s input in a few words, like its tool call's line."""
    return tool_summary(str(request.get("tool_name") or "tool"), request.get("input"))


def permission_line(request: Mapping[str, Any]) -> Text:
    """Kind, tool, what it would do, the id to answer and when nobody answering denies it."""
    line = Text("⏸ ", style="bold yellow")
    line.append(f"{request.get('kind', 'tool')} ", style="yellow")
    line.append(str(request.get("tool_name") or "tool"), style="bold")
    summary = prompt_summary(request)
    if summary:
        line.append("  " + summary)
    expires = request.get("expires_at")
    when = f"expires {expires}" if expires else "never expires"
    line.append(f"  (id {request.get('permission_id')}, {when})", style="dim")
    return line


def _diff_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "bold"
    if line.startswith("+"):
        return "green"
    if line.startswith("-"):
        return "red"
    return "cyan" if line.startswith("@@") else ""


def preview_lines(preview: object) -> list[Text]:
    """The server's preview under the prompt: the diff with +/- in colour, or the command."""
    if not isinstance(preview, Mapping):
        return []
    shown: list[Text] = []
    if preview.get("kind") == "diff":
        for row in str(preview.get("diff") or "").splitlines():
            shown.append(Text(PREVIEW_INDENT + row, style=_diff_style(row)))
    elif preview.get("kind") == "command":
        rows = str(preview.get("command") or "").splitlines() or [""]
        shown.append(Text(f"{PREVIEW_INDENT}$ {rows[0]}", style="bold"))
        shown += [Text(f"{PREVIEW_INDENT}  {row}", style="bold") for row in rows[1:]]
        if preview.get("description"):
            shown.append(Text(f"{PREVIEW_INDENT}# {preview['description']}", style="dim"))
    if preview.get("truncated"):
        shown.append(Text(f"{PREVIEW_INDENT}… preview truncated", style="yellow"))
    if preview.get("note"):
        shown.append(Text(f"{PREVIEW_INDENT}{preview['note']}", style="dim"))
    if preview.get("outside_project"):
        shown.append(Text(f"{PREVIEW_INDENT}outside the project directory", style="yellow"))
    return shown


def approval_question(request: Mapping[str, Any]) -> str:
    """What the terminal asks for one prompt (the answer is y or anything else)."""
    summary = prompt_summary(request)
    tool = str(request.get("tool_name") or "tool")
    return f"Allow {tool} {summary}? [y/N] " if summary else f"Allow {tool}? [y/N] "


def resolved_line(resolved: Mapping[str, Any]) -> Text:
    """Allowed or denied, why, by which connection (and the deny's message)."""
    allowed = resolved.get("behavior") == "allow"
    line = Text(
        f"{OK} allowed" if allowed else f"{FAIL} denied",
        style="bold green" if allowed else "bold red",
    )
    line.append(f" {resolved.get('permission_id')} · {resolved.get('reason', '?')}")
    if resolved.get("by_connection_id"):
        line.append(f" · by {resolved['by_connection_id']}")
    if resolved.get("updated_input") is not None:
        line.append(" · with a changed input")
    if resolved.get("message"):
        line.append(f" — {resolved['message']}", style="dim")
    return line


def server_lines(event: Mapping[str, Any]) -> list[Text]:
    kind = event.get("type")
    if kind == "permission_request":
        return [permission_line(event), *preview_lines(event.get("preview"))]
    if kind == "permission_resolved":
        return [resolved_line(event)]
    if kind == "stderr":
        return [Text(str(event.get("text", "")).rstrip("\n"), style="yellow dim")]
    if kind == "raw_output":
        return [Text(str(event.get("line", "")), style="dim")]
    if kind == "process_killed":
        return [Text("Run killed", style="yellow")]
    if kind == "session_reset":
        return [Text("New session", style="dim")]
    return []  # execution_started / _finished: the progress line and the summary


def record_lines(record: Mapping[str, Any], *, seq: bool = False) -> list[Text]:
    """What a history Record shows; ``seq`` prefixes each with its number (history view)."""
    message = record.get("message")
    if not isinstance(message, Mapping):
        return []
    direction = record.get("direction")
    if direction == "claude":
        lines = claude_lines(message)
    elif direction == "client":
        lines = [Text("> " + str(message.get("prompt", "")), style="bold")]
    else:
        lines = server_lines(message)
        if seq and message.get("type") == "execution_finished":
            lines = [summary_line(message)]
    if seq and lines:
        prefix = Text(f"{record.get('seq', '?'):>6} ", style="dim")
        lines = [
            prefix + line if i == 0 else Text("       ") + line for i, line in enumerate(lines)
        ]
    return lines


# ------------------------------------------------------------------ responses


def summary_line(finished: Mapping[str, Any], error: str | None = None) -> Text:
    """The run's last line: outcome, duration, cost (and why, when it did not succeed)."""
    outcome = str(finished.get("outcome", "?"))
    good = outcome == "success"
    if outcome == "interrupted":  # asked for, not a failure: the session goes on
        line = Text(f"{STOPPED} interrupted", style="bold yellow")
        good = True
    elif good:
        line = Text(f"{OK} {outcome}", style="bold green")
    else:
        line = Text(f"{FAIL} {outcome}", style="bold red")
    details = [format_duration(finished.get("duration_ms")), format_cost(finished.get("cost_usd"))]
    if finished.get("exit_code") not in (None, 0):
        details.append(f"exit {finished['exit_code']}")
    if finished.get("signal"):
        details.append(f"signal {finished['signal']}")
    line.append(" · " + " · ".join(details))
    reason = error or finished.get("error")
    if reason and not good:
        line.append(f" — {reason}", style="red")
    return line


def error_line(data: Mapping[str, Any]) -> Text:
    line = Text(f"error {data.get('code', '?')}: {data.get('message', '')}", style="bold red")
    details = data.get("details")
    if details:
        line.append(" " + json.dumps(details, ensure_ascii=False), style="red")
    return line


def project_line(state: Mapping[str, Any]) -> Text:
    line = Text(f"{state.get('id')}  ", style="bold")
    line.append(str(state.get("path")))
    line.append(f"  {state.get('state')}", style=_state_style(state.get("state")))
    return line


def _state_style(state: object) -> str:
    return {"EXECUTING": "yellow", "ERROR": "red"}.get(str(state), "green")


def project_row(state: Mapping[str, Any]) -> Text:
    """One project a line, nothing cut or wrapped (scripts copy ids and paths):
    id, state, last seq, path; ``--json`` has every field."""
    value = str(state.get("state"))
    line = Text(f"{state.get('id')}  ")
    line.append(f"{value:<9}", style=_state_style(value))
    line.append(f"  {state.get('last_seq')!s:>6}  {state.get('path')}")
    return line


def settings_lines(state: Mapping[str, Any]) -> list[Text]:
    """A project's ``settings``: the approvals in effect, then one allowed rule a line."""
    settings = state.get("settings") if isinstance(state.get("settings"), Mapping) else {}
    assert isinstance(settings, Mapping)
    lines = [Text(f"approvals      {settings.get('approvals')}")]
    rules = settings.get("allowed_tools") or []
    lines += [Text(f"allowed_tools  {rule}") for rule in rules]
    if not rules:
        lines.append(Text("allowed_tools  (none)", style="dim"))
    return lines


def health_table(report: Mapping[str, Any]) -> Table:
    def pair(section: str) -> str:
        part = report.get(section)
        if not isinstance(part, Mapping):
            return "—"
        return f"{part.get('active', part.get('count'))} / {part.get('max')}"

    claude = report.get("claude") if isinstance(report.get("claude"), Mapping) else {}
    disk = report.get("disk") if isinstance(report.get("disk"), Mapping) else {}
    assert isinstance(claude, Mapping) and isinstance(disk, Mapping)
    status = str(report.get("status"))
    table = Table(show_header=False, box=None)
    table.add_row("status", Text(status, style="green" if status == "healthy" else "red"))
    for key, value in (
        ("version", str(report.get("version"))),
        ("uptime", format_duration((report.get("uptime_s") or 0) * 1000)),
        (
            "claude",
            f"{claude.get('path')} {claude.get('version') or ''}".strip()
            if claude.get("available")
            else "not found",
        ),
        ("connections", pair("connections")),
        ("projects", pair("projects")),
        ("executions", pair("executions")),
        ("disk", f"{disk.get('used_percent')}% used, {gigabytes(disk.get('free_bytes'))} free"),
    ):
        table.add_row(key, Text(value))
    return table


def history_footer(page: Mapping[str, Any], *, forward: bool) -> Text:
    """How many, which seqs, and the option that fetches the next page when there is one."""
    count = len(page.get("messages") or [])
    first, last = page.get("first_seq"), page.get("last_seq")
    text = f"{count} records" + (f" (seq {first}-{last})" if count else "")
    text += f", project at seq {page.get('project_last_seq')}"
    if page.get("has_more") and count:
        text += f"; next page: --after {last}" if forward else f"; older: --before {first}"
    return Text(text, style="dim")


# ---------------------------------------------------------------------- output


def console(file: IO[str], **options: Any) -> Console:
    """Soft wrap: long lines are left to the terminal, never cut into a pipe."""
    return Console(file=file, highlight=False, soft_wrap=True, **options)


class Output:
    """Where the client writes: human renderables or one JSON frame a line on stdout,
    notes on stderr, and (on a terminal only) a live spinner with the elapsed time."""

    def __init__(self, out: Console, err: Console, *, json_mode: bool) -> None:
        self.out = out
        self.err = err
        self.json_mode = json_mode
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def frame(self, payload: bytes) -> None:
        """In ``--json`` mode: the frame exactly as received, on a line of its own (the
        server's JSON never holds a raw newline)."""
        if self.json_mode:
            self.out.file.write(payload.decode("utf-8") + "\n")
            self.out.file.flush()

    def show(self, *renderables: RenderableType) -> None:
        if not self.json_mode:
            for renderable in renderables:
                self.out.print(renderable)

    def note(self, text: str, style: str = "dim") -> None:
        """A line for the person, never mixed into stdout (which scripts read)."""
        self.err.print(Text(text, style=style))

    def working(self, label: str) -> None:
        """Start (or relabel) the progress line; a no-op off a terminal and in --json."""
        if self.json_mode or not self.out.is_terminal:
            return
        if self._progress is None:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.out,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(label)
        else:
            assert self._task is not None
            self._progress.update(self._task, description=label)

    def idle(self) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.stop()

    @property
    def live(self) -> bool:
        return self._progress is not None

    @property
    def label(self) -> str | None:
        """What the progress line says (None when there is none)."""
        if self._progress is None or self._task is None:
            return None
        return str(self._progress.tasks[0].description)

/** A project's conversation: its Records in seq order (each element once, by
 * data-seq), "Load older" at the top, the approval sheet, and the composer with
 * Send, Stop (interrupt), Kill and New session; Settings in the header opens the
 * project's settings panel. */

import { approvalSheet } from "../approval.mjs";
import { h } from "../dom.mjs";
import { basename } from "../format.mjs";
import { dependents, renderRecord } from "../render/record.mjs";
import { settingsPanel } from "./settings.mjs";

const MODELS = [["", "Default model"], ["sonnet", "Sonnet"], ["opus", "Opus"], ["haiku", "Haiku"]];
const MODES = [["", "Default mode"], ["acceptEdits", "Accept edits"], ["plan", "Plan"], ["auto", "Auto"], ["dontAsk", "Don't ask"]];
const NEAR_BOTTOM_PX = 120;

/**
 * @param {{store: import("../store.mjs").Store, sync: import("../sync.mjs").Sync,
 *   connection: any, projectId: string, back: () => void}} deps
 * @returns {{el: HTMLElement, destroy: () => void}}
 */
export function conversationScreen({ store, sync, connection, projectId, back }) {
  const elements = new Map();
  let order = [];
  const transcript = h("div.transcript", { "aria-label": "Conversation", role: "log" });
  const records = h("div.records");
  const olderButton = h("button.secondary.older", { type: "button", hidden: true }, "Load older");
  const alert = h("div.alerts", { role: "alert" });
  const title = h("h1.title", null, basename(store.projects.get(projectId)?.path || ""));
  const subtitle = h("p.subtitle.muted");
  const stateChip = h("span.state");
  const waitingBanner = h("button.banner", { type: "button", hidden: true });
  transcript.append(olderButton, records, alert);

  const sheet = approvalSheet({ store, connection, projectId });
  waitingBanner.addEventListener("click", () => sheet.show());

  const lookups = {
    hasToolUse: (id) => store.indexes(projectId).toolUseSeq.has(id),
    toolResult: (id) => store.indexes(projectId).toolResult.get(id) || null,
    permission: (toolUseId) => store.indexes(projectId).permissionByToolUse.get(toolUseId) || null,
    resolution: (pid) => store.indexes(projectId).resolution.get(pid) || null,
    isPending: (pid) => store.pendingMap(projectId).has(pid),
    review: (pid) => sheet.show(pid),
    finished: (runId) => store.indexes(projectId).finished.get(runId) || null,
  };

  function nearBottom() {
    return transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < NEAR_BOTTOM_PX;
  }

  function place(record) {
    const el = renderRecord(record, lookups);
    const old = elements.get(record.seq);
    if (old) {
      old.replaceWith(el);
      elements.set(record.seq, el);
      return;
    }
    elements.set(record.seq, el);
    if (!order.length || record.seq > order[order.length - 1]) {
      order.push(record.seq);
      records.append(el);
      return;
    }
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (order[mid] < record.seq) lo = mid + 1;
      else hi = mid;
    }
    records.insertBefore(el, elements.get(order[lo]));
    order.splice(lo, 0, record.seq);
  }

  function rerender(seqs) {
    const map = store.records.get(projectId);
    for (const seq of new Set(seqs)) {
      const record = map?.get(seq);
      if (record && elements.has(seq)) place(record);
    }
  }

  // Records arriving in a burst (a fast run, a replay) are placed once a frame: reading
  // the scroll position forces a layout, and doing that per record made a 5,000-line run
  // quadratic. Older pages (prepends) keep their scroll anchor the same way.
  let queued = [];
  let frame = 0;

  function onRecords(event) {
    if (event.detail.projectId !== projectId) return;
    queued.push(...event.detail.added);
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function flush() {
    frame = 0;
    const added = queued;
    queued = [];
    if (!added.length) return;
    const stick = nearBottom();
    const before = transcript.scrollHeight;
    const top = transcript.scrollTop;
    const index = store.indexes(projectId);
    let newest = -Infinity;
    for (const record of added) newest = Math.max(newest, record.seq);
    const prepend = order.length > 0 && newest < order[0];
    const touched = [];
    for (const record of added) {
      place(record);
      touched.push(...dependents(record, index));
    }
    rerender(touched);
    olderButton.hidden = !store.hasOlder(projectId);
    if (prepend) transcript.scrollTop = top + (transcript.scrollHeight - before);
    else if (stick) transcript.scrollTop = transcript.scrollHeight;
  }

  function onPermissions(event) {
    if (event.detail.projectId !== projectId) return;
    const index = store.indexes(projectId);
    rerender([...index.permissionSeq.values()]);
    sheet.update();
    drawState();
  }

  function drawState() {
    const project = store.projects.get(projectId);
    const state = String(project?.state || "unknown");
    title.textContent = basename(project?.path || "");
    subtitle.textContent = project?.path || projectId;
    stateChip.textContent = state.toLowerCase();
    stateChip.className = `state state-${state.toLowerCase()}`;
    const running = state === "EXECUTING";
    const online = connection.state === "connected";
    send.disabled = running || !online;
    stop.disabled = !running || !online;
    kill.disabled = !running || !online;
    reset.disabled = running || !online;
    const waiting = store.pendingList(projectId).length;
    waitingBanner.hidden = !waiting || !sheet.el.hidden;
    waitingBanner.textContent = `${waiting} waiting for your answer — Review`;
  }

  function showError(text, key) {
    const existing = key ? alert.querySelector(`[data-key="${key}"]`) : null;
    if (existing) existing.remove();
    const item = h("p.error-text.frame-error", { dataset: { key: key || "" } }, text);
    item.append(" ", h("button.link.small", { type: "button", onClick: () => item.remove() }, "Dismiss"));
    alert.append(item);
    if (nearBottom()) transcript.scrollTop = transcript.scrollHeight;
  }

  function onFrameError(event) {
    const frame = event.detail;
    if (frame.project_id !== projectId) return;
    // A failed or timed-out run already shows in red in its footer and result.
    if (frame.data?.code === "EXECUTION_FAILED" || frame.data?.code === "EXECUTION_TIMEOUT") return;
    showError(`${frame.data?.code || "ERROR"}: ${frame.data?.message || ""}`);
  }

  function onJoinFailed(event) {
    if (event.detail.projectId !== projectId) return;
    const { error } = event.detail;
    if (error?.code === "DISCONNECTED") return; // rejoined after the reconnect
    showError(error?.code === "PROJECT_NOT_FOUND" ? "This project does not exist on the server (any more)." : `${error?.code}: ${error?.message}`);
  }

  async function act(type, data, button) {
    button.disabled = true;
    try {
      return await connection.request(type, data, { projectId });
    } catch (error) {
      showError(`${error.code}: ${error.message}`);
      return null;
    } finally {
      drawState();
    }
  }

  // ------------------------------------------------------------------ composer
  const prompt = h("textarea#prompt", { name: "prompt", rows: "2", placeholder: "Ask Claude…", enterkeyhint: "send" });
  const model = select("model", "Model", MODELS);
  const mode = select("mode", "Permission mode", MODES);
  const send = h("button.primary.send", { type: "submit" }, "Send");
  const stop = h("button.warn-btn", { type: "button", onClick: () => act("agent_interrupt", null, stop) }, "Stop");
  const kill = h("button.danger", { type: "button", onClick: () => act("agent_kill", null, kill) }, "Kill");
  const reset = h("button.secondary", { type: "button", onClick: () => act("agent_new_session", null, reset) }, "New session");

  const composer = h(
    "form.composer",
    {
      onSubmit: async (event) => {
        event.preventDefault();
        const text = prompt.value;
        if (!text.trim() || send.disabled) return;
        const options = {};
        if (model.select.value) options.model = model.select.value;
        if (mode.select.value) options.permission_mode = mode.select.value;
        // Cleared at once (not on the reply) so text typed meanwhile is never lost;
        // put back if the server refused the prompt and the box is still empty.
        prompt.value = "";
        const reply = await act("execute", { prompt: text, options }, send);
        if (reply) transcript.scrollTop = transcript.scrollHeight;
        else if (!prompt.value) prompt.value = text;
      },
    },
    h("div.compose-row", null, h("label.sr-only", { for: "prompt" }, "Prompt"), prompt, send),
    h("div.option-row", null, model.el, mode.el),
    h("div.control-row", null, stop, kill, reset),
  );
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  // Older history: the button at the top, or scrolling up to it. One page at a time;
  // a press while a page is on its way waits for that one (the button stays enabled,
  // marked busy, so a press is never lost on a disabled button).
  let loadingOlder = null;
  function loadOlder() {
    if (loadingOlder || !store.hasOlder(projectId)) return loadingOlder;
    olderButton.setAttribute("aria-busy", "true");
    loadingOlder = sync
      .loadOlder(projectId)
      .catch((error) => showError(`${error.code}: ${error.message}`))
      .finally(() => {
        loadingOlder = null;
        olderButton.removeAttribute("aria-busy");
        olderButton.hidden = !store.hasOlder(projectId);
      });
    return loadingOlder;
  }
  olderButton.addEventListener("click", () => loadOlder());
  const NEAR_TOP_PX = 80;
  transcript.addEventListener(
    "scroll",
    () => {
      if (transcript.scrollTop < NEAR_TOP_PX && !olderButton.hidden) loadOlder();
    },
    { passive: true },
  );

  const settings = settingsPanel({ store, connection, projectId });
  const settingsButton = h(
    "button.secondary.settings-btn",
    { type: "button", "aria-controls": "settings-panel", "aria-expanded": "false" },
    "Settings",
  );
  settingsButton.addEventListener("click", () => {
    settingsButton.setAttribute("aria-expanded", String(settings.toggle()));
  });

  const head = h(
    "header.conv-head",
    null,
    h("button.back", { type: "button", "aria-label": "Back to projects", onClick: back }, "‹"),
    h("div.titles", null, title, subtitle),
    stateChip,
    settingsButton,
  );

  const el = h("main.screen.conversation", null, head, settings.el, transcript, waitingBanner, sheet.el, composer);

  const onProjects = () => {
    drawState();
    settings.update();
  };
  const onConn = () => {
    drawState();
    settings.update();
  };
  store.addEventListener("records", onRecords);
  store.addEventListener("permissions", onPermissions);
  store.addEventListener("projects", onProjects);
  sync.addEventListener("frame-error", onFrameError);
  sync.addEventListener("join-failed", onJoinFailed);
  connection.addEventListener("state", onConn);

  for (const record of store.recordList(projectId)) place(record);
  olderButton.hidden = !store.hasOlder(projectId);
  drawState();
  sheet.update();
  drawState();
  requestAnimationFrame(() => {
    transcript.scrollTop = transcript.scrollHeight;
  });
  sync.follow(projectId);

  return {
    el,
    destroy() {
      if (frame) cancelAnimationFrame(frame);
      store.removeEventListener("records", onRecords);
      store.removeEventListener("permissions", onPermissions);
      store.removeEventListener("projects", onProjects);
      sync.removeEventListener("frame-error", onFrameError);
      sync.removeEventListener("join-failed", onJoinFailed);
      connection.removeEventListener("state", onConn);
    },
  };
}

function select(id, label, options) {
  const sel = h(`select#${id}`, { name: id }, options.map(([value, text]) => h("option", { value }, text)));
  return { select: sel, el: h("div.field", null, h("label.sr-only", { for: id }, label), sel) };
}

/** Bootstrap: pairing, the connection status line, and routing by fragment
 * ("" projects, "#project=<id>" a conversation); wires notifications. */

import { Connection } from "./connection.mjs";
import { replace } from "./dom.mjs";
import { basename } from "./format.mjs";
import { notify } from "./notify.mjs";
import {
  clearToken,
  currentToken,
  restoreReplacedToken,
  saveToken,
  takeTokenFromFragment,
  tokenAccepted,
} from "./pairing.mjs";
import { conversationScreen } from "./screens/conversation.mjs";
import { pairingScreen } from "./screens/pairing.mjs";
import { projectsScreen } from "./screens/projects.mjs";
import { Store } from "./store.mjs";
import { Sync } from "./sync.mjs";

const root = document.getElementById("app");
const status = document.getElementById("status");
const store = new Store();
const connection = new Connection({ token: currentToken });
const sync = new Sync(connection, store);
let screen = null;
let pairingMessage = "";
let statusTimer = null;

function drawStatus() {
  clearTimeout(statusTimer);
  const { state, retryAt } = connection;
  let text = state;
  if (state === "connecting") text = "connecting…";
  if (state === "offline" && retryAt) {
    const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    text = `offline · retrying in ${s} s`;
    statusTimer = setTimeout(drawStatus, 1000);
  }
  status.textContent = text;
  status.dataset.state = state;
}

function show(next) {
  if (screen?.destroy) screen.destroy();
  screen = next;
  replace(root, next.el);
}

function route() {
  if (!currentToken()) {
    show({ el: pairingScreen({ message: pairingMessage, onPair: pair }) });
    return;
  }
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const projectId = params.get("project");
  if (projectId) {
    show(conversationScreen({ store, sync, connection, projectId, back: () => go("") }));
    document.title = `${basename(store.projects.get(projectId)?.path || "Project")} · Pocket Agent`;
  } else {
    show(projectsScreen({ store, connection, open: (id) => go(`project=${encodeURIComponent(id)}`) }));
    document.title = "Pocket Agent";
  }
}

function go(fragment) {
  if (location.hash.replace(/^#/, "") === fragment) route();
  else location.hash = fragment;
}

function pair(token) {
  saveToken(token);
  pairingMessage = "";
  connection.stop();
  connection.start();
  route();
}

connection.addEventListener("state", drawStatus);
connection.addEventListener("state", () => {
  if (connection.state === "connected") tokenAccepted();
});
connection.addEventListener("unauthorized", () => {
  const refused = currentToken();
  if (restoreReplacedToken(refused)) {
    // A link brought a token the server refuses: keep the pairing it would have replaced.
    connection.stop();
    connection.start();
    return;
  }
  const had = Boolean(refused);
  clearToken(refused);
  pairingMessage = had ? "The server refused this token. Pair again with the current token (pocket-agent-server token)." : "";
  route();
});
connection.addEventListener("throttled", () => {
  status.textContent = "offline · too many failed attempts, waiting";
});

// Notifications while the tab is hidden: a prompt waits, a run ended.
const notified = new Set();
store.addEventListener("permissions", (event) => {
  const { projectId } = event.detail;
  for (const request of store.pendingList(projectId)) {
    if (notified.has(request.permission_id)) continue;
    notified.add(request.permission_id);
    const path = store.projects.get(projectId)?.path || "a project";
    notify(`Approval needed: ${request.tool_name || "tool"}`, basename(path), {
      tag: request.permission_id,
      onClick: () => go(`project=${encodeURIComponent(projectId)}`),
    });
  }
});
sync.addEventListener("record", (event) => {
  const { projectId, record, live } = event.detail;
  if (!live || record.message?.type !== "execution_finished") return;
  const path = store.projects.get(projectId)?.path || "a project";
  notify(`Run ${record.message.outcome}`, basename(path), {
    tag: `run-${record.run_id}`,
    onClick: () => go(`project=${encodeURIComponent(projectId)}`),
  });
});

window.addEventListener("hashchange", () => {
  // A pairing link opened in a tab that is already open: pair with its token.
  if (takeTokenFromFragment()) pair(currentToken());
  else route();
});
takeTokenFromFragment();
drawStatus();
route();
if (currentToken()) connection.start();

// For debugging from the console only; nothing reads it.
window.pocketAgent = { store, connection, sync };

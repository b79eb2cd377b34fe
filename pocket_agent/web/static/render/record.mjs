/** One Record as one element carrying data-seq. Dispatches on direction and type;
 * whatever is unknown, or fails to render, becomes collapsed JSON, never an exception. */

import { h } from "../dom.mjs";
import { renderClaude } from "./claude.mjs";
import { jsonDetails } from "./json.mjs";
import { renderPrompt } from "./prompt.mjs";
import { renderServer } from "./server.mjs";

/**
 * @param {object} record {seq, timestamp, run_id, direction, message}
 * @param {{hasToolUse: (id: string) => boolean, toolResult: (id: string) => any,
 *   permission: (toolUseId: string) => any, resolution: (permissionId: string) => any,
 *   isPending: (permissionId: string) => boolean, review: (permissionId: string) => void,
 *   finished: (runId: string) => any}} lookups
 * @returns {HTMLElement}
 */
export function renderRecord(record, lookups) {
  const message = record && typeof record.message === "object" && record.message ? record.message : {};
  const ctx = { ...lookups, record };
  const wrap = h("div.rec", { dataset: { seq: String(record.seq), dir: String(record.direction || "") } });
  let body;
  try {
    if (record.direction === "client") body = renderPrompt(message);
    else if (record.direction === "server") body = renderServer(message, ctx);
    else if (record.direction === "claude") body = renderClaude(message, ctx);
    if (body === undefined) body = jsonDetails(`${message.type || "record"} (${record.direction || "?"})`, message);
  } catch {
    body = jsonDetails(`${message.type || "record"} (could not be shown)`, message, "raw render-failed");
  }
  if (body === null) wrap.hidden = true;
  else wrap.append(body);
  return wrap;
}

/**
 * The seqs whose rendering depends on `record` (a tool_result changes its tool_use's
 * card; a permission_resolved its request's card), to render them again.
 * @param {object} record
 * @param {object} index the Store's indexes for the project
 * @returns {number[]}
 */
export function dependents(record, index) {
  const message = record?.message || {};
  const seqs = [];
  if (message.type === "permission_resolved" && index.permissionSeq.has(message.permission_id)) {
    seqs.push(index.permissionSeq.get(message.permission_id));
  }
  const blocks = Array.isArray(message.message?.content) ? message.message.content : [];
  for (const block of blocks) {
    if (block?.type === "tool_result" && index.toolUseSeq.has(block.tool_use_id)) {
      seqs.push(index.toolUseSeq.get(block.tool_use_id));
    }
    if (block?.type === "tool_use" && index.toolResult.has(block.id)) {
      seqs.push(index.toolResult.get(block.id).seq);
    }
  }
  if (message.type === "execution_finished" && index.resultSeq.has(record.run_id)) {
    seqs.push(index.resultSeq.get(record.run_id));
  }
  if (message.type === "permission_request" && message.tool_use_id && index.toolUseSeq.has(message.tool_use_id)) {
    seqs.push(index.toolUseSeq.get(message.tool_use_id));
  }
  return seqs.filter((s) => s !== record.seq);
}

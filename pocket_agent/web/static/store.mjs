/** The client's copy of the server's state: projects, each project's Records keyed by
 * seq (so a Record seen twice, live and in a history page, is kept once), and the
 * permission prompts still open. Emits "projects", "records" and "permissions". */

export class Store extends EventTarget {
  constructor() {
    super();
    /** @type {Map<string, object>} id -> ProjectState */
    this.projects = new Map();
    /** @type {Map<string, Map<number, object>>} id -> seq -> Record */
    this.records = new Map();
    /** @type {Map<string, boolean>} id -> whether older Records exist on the server */
    this.older = new Map();
    /** @type {Map<string, Map<string, object>>} id -> permission_id -> request */
    this.pending = new Map();
    /** @type {Map<string, Set<string>>} id -> permission ids seen resolved */
    this.resolved = new Map();
    /** @type {Map<string, Map<string, object>>} id -> per-project indexes */
    this.index = new Map();
    this.listLoaded = false;
  }

  /** @param {object[]} states the project_list_response */
  setProjects(states) {
    const seen = new Set();
    for (const state of states) {
      seen.add(state.id);
      this.putProject(state, false);
    }
    for (const id of [...this.projects.keys()]) if (!seen.has(id)) this.removeProject(id, false);
    this.listLoaded = true;
    this.emit("projects", {});
  }

  /**
   * Take a ProjectState (from project_state, project_created, a list).
   * @param {object} state
   * @param {boolean} [notify]
   */
  putProject(state, notify = true) {
    if (!state || typeof state.id !== "string") return;
    this.projects.set(state.id, state);
    if (Array.isArray(state.pending_permissions)) {
      const done = this.resolvedSet(state.id);
      const open = new Map();
      for (const request of state.pending_permissions) {
        if (request && !done.has(request.permission_id)) open.set(request.permission_id, request);
      }
      this.pending.set(state.id, open);
      if (notify) this.emit("permissions", { projectId: state.id });
    }
    if (notify) this.emit("projects", { projectId: state.id });
  }

  /** @param {string} id @param {boolean} [notify] */
  removeProject(id, notify = true) {
    this.projects.delete(id);
    this.records.delete(id);
    this.pending.delete(id);
    this.index.delete(id);
    if (notify) this.emit("projects", { projectId: id });
  }

  /** @returns {object[]} ProjectStates, oldest first as the server lists them */
  projectList() {
    return [...this.projects.values()];
  }

  /**
   * Add Records (live or from history); returns those that were new.
   * @param {string} projectId
   * @param {object[]} records
   * @returns {object[]}
   */
  addRecords(projectId, records) {
    let map = this.records.get(projectId);
    if (!map) this.records.set(projectId, (map = new Map()));
    const added = [];
    for (const record of records) {
      if (!record || !Number.isInteger(record.seq) || map.has(record.seq)) continue;
      map.set(record.seq, record);
      this.indexRecord(projectId, record);
      added.push(record);
    }
    if (added.length) {
      added.sort((a, b) => a.seq - b.seq);
      this.emit("records", { projectId, added });
    }
    return added;
  }

  indexRecord(projectId, record) {
    const idx = this.indexes(projectId);
    const message = record.message || {};
    if (message.type === "permission_request" && message.permission_id) {
      idx.permissionSeq.set(message.permission_id, record.seq);
      if (message.tool_use_id) idx.permissionByToolUse.set(message.tool_use_id, message);
      if (!this.resolvedSet(projectId).has(message.permission_id)) {
        this.pendingMap(projectId).set(message.permission_id, message);
        this.emit("permissions", { projectId });
      }
    } else if (message.type === "permission_resolved" && message.permission_id) {
      this.resolvedSet(projectId).add(message.permission_id);
      idx.resolution.set(message.permission_id, message);
      if (this.pendingMap(projectId).delete(message.permission_id)) {
        this.emit("permissions", { projectId });
      }
    }
    if (record.run_id && record.direction === "claude" && message.type === "result") {
      idx.resultSeq.set(record.run_id, record.seq);
    }
    if (record.run_id && message.type === "execution_finished") idx.finished.set(record.run_id, message);
    const blocks = Array.isArray(message.message?.content) ? message.message.content : [];
    for (const block of blocks) {
      if (block?.type === "tool_use" && block.id) idx.toolUseSeq.set(block.id, record.seq);
      if (block?.type === "tool_result" && block.tool_use_id) {
        idx.toolResult.set(block.tool_use_id, { block, seq: record.seq });
      }
    }
  }

  /** @param {string} projectId @returns {object} the lookup tables renderers use */
  indexes(projectId) {
    let idx = this.index.get(projectId);
    if (!idx) {
      idx = {
        toolUseSeq: new Map(),
        toolResult: new Map(),
        permissionSeq: new Map(),
        permissionByToolUse: new Map(),
        resolution: new Map(),
        resultSeq: new Map(),
        finished: new Map(),
      };
      this.index.set(projectId, idx);
    }
    return idx;
  }

  /** @param {string} projectId @returns {number} the highest seq held (0: none) */
  lastSeq(projectId) {
    const map = this.records.get(projectId);
    let last = 0;
    if (map) for (const seq of map.keys()) if (seq > last) last = seq;
    return last;
  }

  /** @param {string} projectId @returns {number|null} the lowest seq held */
  firstSeq(projectId) {
    const map = this.records.get(projectId);
    if (!map || !map.size) return null;
    let first = Infinity;
    for (const seq of map.keys()) if (seq < first) first = seq;
    return first;
  }

  /** @param {string} projectId @returns {object[]} Records in seq order */
  recordList(projectId) {
    const map = this.records.get(projectId);
    return map ? [...map.values()].sort((a, b) => a.seq - b.seq) : [];
  }

  /** @param {string} projectId @param {boolean} value */
  setOlder(projectId, value) {
    this.older.set(projectId, value);
    this.emit("records", { projectId, added: [] });
  }

  /** @param {string} projectId @returns {boolean} */
  hasOlder(projectId) {
    return this.older.get(projectId) ?? false;
  }

  /** @param {string} projectId @returns {object[]} open prompts, oldest first */
  pendingList(projectId) {
    return [...this.pendingMap(projectId).values()].sort((a, b) =>
      String(a.created_at).localeCompare(String(b.created_at)),
    );
  }

  /** @returns {number} open prompts over all projects */
  pendingTotal() {
    let n = 0;
    for (const map of this.pending.values()) n += map.size;
    return n;
  }

  pendingMap(projectId) {
    let map = this.pending.get(projectId);
    if (!map) this.pending.set(projectId, (map = new Map()));
    return map;
  }

  resolvedSet(projectId) {
    let set = this.resolved.get(projectId);
    if (!set) this.resolved.set(projectId, (set = new Set()));
    return set;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Keeps the Store in step with the server: the project list, the projects this page
 * follows (joined on first open, rejoined with after_seq after every reconnect, so no
 * Record is missed or held twice), live frames, and older pages on demand. */

const FIRST_PAGE = 100;
const OLDER_PAGE = 100;

export class Sync extends EventTarget {
  /**
   * @param {import("./connection.mjs").Connection} connection
   * @param {import("./store.mjs").Store} store
   * Events: "frame-error" (detail: an error frame not answering a request of ours),
   * "record" (detail {projectId, record, live}) for each new Record.
   */
  constructor(connection, store) {
    super();
    this.connection = connection;
    this.store = store;
    /** @type {Set<string>} projects this page follows */
    this.followed = new Set();
    /** @type {Set<string>} followed projects whose first page has arrived */
    this.loaded = new Set();
    this.joining = new Map();
    connection.addEventListener("open", () => this.onOpen());
    connection.addEventListener("frame", (event) => this.onFrame(event.detail));
  }

  async onOpen() {
    this.joining.clear();
    this.connection
      .request("project_list", null, { replyTypes: ["project_list_response"] })
      .then((reply) => this.store.setProjects(reply.data?.projects || []))
      .catch(() => {});
    for (const id of this.followed) this.join(id);
  }

  /**
   * Follow a project: join it (with after_seq when its Records are already held).
   * @param {string} projectId
   * @returns {Promise<void>}
   */
  follow(projectId) {
    this.followed.add(projectId);
    if (this.connection.state !== "connected") return Promise.resolve();
    return this.join(projectId);
  }

  join(projectId) {
    if (this.joining.has(projectId)) return this.joining.get(projectId);
    const work = this.doJoin(projectId).finally(() => this.joining.delete(projectId));
    this.joining.set(projectId, work);
    return work;
  }

  async doJoin(projectId) {
    const conn = this.connection;
    try {
      if (this.loaded.has(projectId)) {
        // Rejoin: the reply's message_history holds every Record after the last one
        // held, and comes before any live one; more than a page is fetched after it.
        const reply = await conn.request(
          "project_join",
          { after_seq: this.store.lastSeq(projectId) },
          { projectId, replyTypes: ["message_history"] },
        );
        let page = reply.data;
        this.takeHistory(projectId, page, false);
        while (page?.has_more) {
          const next = await conn.request(
            "get_messages",
            { after_seq: this.store.lastSeq(projectId), limit: 1000 },
            { projectId, replyTypes: ["message_history"] },
          );
          page = next.data;
          this.takeHistory(projectId, page, false);
        }
      } else {
        await conn.request("project_join", null, { projectId });
        const page = await conn.request(
          "get_messages",
          { limit: FIRST_PAGE },
          { projectId, replyTypes: ["message_history"] },
        );
        this.takeHistory(projectId, page.data, true);
        this.loaded.add(projectId);
      }
    } catch (error) {
      if (error?.code === "PROJECT_NOT_FOUND") {
        this.followed.delete(projectId);
        this.store.removeProject(projectId);
      }
      this.dispatchEvent(new CustomEvent("join-failed", { detail: { projectId, error } }));
    }
  }

  /**
   * Fetch the page of Records just before the oldest one held.
   * @param {string} projectId
   * @returns {Promise<number>} how many Records were added
   */
  async loadOlder(projectId) {
    const first = this.store.firstSeq(projectId);
    const data = first === null ? { limit: OLDER_PAGE } : { before_seq: first, limit: OLDER_PAGE };
    const reply = await this.connection.request("get_messages", data, {
      projectId,
      replyTypes: ["message_history"],
    });
    return this.takeHistory(projectId, reply.data, true).length;
  }

  /** Put a message_history page in the store; `older` pages decide "Load older". */
  takeHistory(projectId, data, older) {
    const messages = Array.isArray(data?.messages) ? data.messages : [];
    const added = this.store.addRecords(projectId, messages);
    for (const record of added) {
      this.dispatchEvent(new CustomEvent("record", { detail: { projectId, record, live: !older } }));
    }
    if (older) {
      const first = this.store.firstSeq(projectId);
      this.store.setOlder(projectId, Boolean(data?.has_more) && first !== 1);
    }
    return added;
  }

  onFrame(frame) {
    const projectId = frame.project_id;
    switch (frame.type) {
      case "project_state":
      case "project_created":
        this.store.putProject(frame.data);
        break;
      case "project_deleted":
        this.followed.delete(frame.data?.project_id);
        this.store.removeProject(frame.data?.project_id);
        break;
      case "agent_message":
        if (projectId && frame.data) {
          const added = this.store.addRecords(projectId, [frame.data]);
          for (const record of added) {
            this.dispatchEvent(new CustomEvent("record", { detail: { projectId, record, live: true } }));
          }
        }
        break;
      case "error":
        if (!frame.request_id) this.dispatchEvent(new CustomEvent("frame-error", { detail: frame }));
        break;
      default:
        break;
    }
  }
}

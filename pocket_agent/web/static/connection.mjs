/** The WebSocket to /ws: request ids, replies, reconnect with backoff, rejoining.
 *
 * State is "connecting", "connected" or "offline". A socket that closes before it
 * opened may mean a refused token, so /health is asked; 401 ends in "unauthorized".
 */

import { checkToken } from "./pairing.mjs";

const PROTOCOL = "pocket-agent.v1";
const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 30000;
const REPLY_TIMEOUT_MS = 30000;
const ALIVE_TIMEOUT_MS = 5000;

/** A request the server refused with an error frame. */
export class RequestError extends Error {
  /** @param {{code: string, message: string, details?: any}} data */
  constructor(data) {
    super(data?.message || data?.code || "request failed");
    this.code = data?.code || "UNKNOWN";
    this.details = data?.details;
  }
}

/**
 * The delay before reconnect attempt number `attempt` (0-based): 0.5 s doubling to
 * 30 s, with "full jitter" between half and all of it so phones do not stampede.
 * @param {number} attempt
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** Math.min(attempt, 16));
  return Math.round(base / 2 + (random() * base) / 2);
}

export class Connection extends EventTarget {
  /**
   * @param {{token: () => string|null, url?: string}} options
   *   `token` is asked at every attempt (it may change after re-pairing).
   * Events: "state" (detail {state, retryAt}), "frame" (detail: the frame),
   * "open" (after server_hello), "unauthorized", "throttled".
   */
  constructor({ token, url }) {
    super();
    this.token = token;
    this.url = url || `${location.protocol === "http:" ? "ws" : "wss"}://${location.host}/ws`;
    this.ws = null;
    this.state = "offline";
    this.retryAt = null;
    this.attempt = 0;
    this.timer = null;
    this.nextId = 1;
    this.pending = new Map();
    this.stopped = true;
    this.hello = null;
    this.wake = () => this.reconnectNow();
    this.onVisible = () => {
      if (document.visibilityState !== "visible") return;
      if (this.state === "connected") this.checkAlive();
      else this.reconnectNow();
    };
  }

  /** Start connecting (and keep reconnecting until stop()). */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.wake);
    window.addEventListener("focus", this.wake); // back to the app: no waiting for the backoff
    window.addEventListener("offline", this.onOffline);
    document.addEventListener("visibilitychange", this.onVisible);
    this.open();
  }

  /** Close and stop reconnecting. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this.wake);
    window.removeEventListener("focus", this.wake);
    window.removeEventListener("offline", this.onOffline);
    document.removeEventListener("visibilitychange", this.onVisible);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this.failPending("stopped");
    this.setState("offline", null);
  }

  /** Reconnect at once (no waiting for the backoff) if not connected. */
  reconnectNow() {
    if (this.stopped || this.state !== "offline") return;
    clearTimeout(this.timer);
    this.open();
  }

  /** After the phone slept, a socket may look open but be dead: ask, and reconnect
   * if no answer comes quickly. */
  checkAlive() {
    const ws = this.ws;
    this.request("health", null, { replyTypes: ["health_status"], timeoutMs: ALIVE_TIMEOUT_MS }).catch(() => {
      if (this.ws === ws && ws) ws.close(4001, "no answer");
    });
  }

  onOffline = () => {
    // The browser knows the link is gone: do not wait for a ping timeout.
    if (this.ws && this.state === "connected") this.ws.close(4000, "offline");
  };

  open() {
    const token = this.token();
    if (!token) {
      this.dispatchEvent(new Event("unauthorized"));
      return;
    }
    if (navigator.onLine === false) {
      // No network at all: wait (the "online" event reconnects at once).
      this.scheduleRetry();
      return;
    }
    this.setState("connecting", null);
    let ws;
    try {
      ws = new WebSocket(this.url, [PROTOCOL, `bearer.${token}`]);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
    });
    ws.addEventListener("message", (event) => this.receive(event.data));
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending("connection closed");
      if (this.stopped) return;
      if (!opened || event.code === 1008) this.probe(token);
      else this.scheduleRetry();
    });
  }

  async probe(token) {
    this.setState("connecting", null);
    const verdict = await checkToken(token);
    if (this.stopped) return;
    if (verdict === "refused") {
      this.stop();
      this.dispatchEvent(new Event("unauthorized"));
      return;
    }
    if (verdict === "throttled") this.dispatchEvent(new Event("throttled"));
    this.scheduleRetry();
  }

  scheduleRetry() {
    const delay = backoffDelay(this.attempt++);
    this.setState("offline", Date.now() + delay);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object" || typeof frame.type !== "string") return;
    if (frame.type === "server_hello") {
      this.hello = frame.data || {};
      this.attempt = 0;
      this.setState("connected", null);
      this.dispatchEvent(new Event("open"));
      return;
    }
    const waiter = frame.request_id ? this.pending.get(frame.request_id) : null;
    if (waiter && frame.type === "error") {
      this.settle(frame.request_id);
      waiter.reject(new RequestError(frame.data));
    } else if (waiter && waiter.replyTypes.includes(frame.type)) {
      this.settle(frame.request_id);
      waiter.resolve(frame);
    }
    this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
  }

  settle(id) {
    const waiter = this.pending.get(id);
    if (waiter) clearTimeout(waiter.timer);
    this.pending.delete(id);
  }

  failPending(reason) {
    for (const [id, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new RequestError({ code: "DISCONNECTED", message: reason }));
      this.pending.delete(id);
    }
  }

  /**
   * Send a request and wait for its reply (the first frame with the same request_id
   * whose type is one of `replyTypes`, default the request's own type).
   * @param {string} type
   * @param {object} [data]
   * @param {{projectId?: string, replyTypes?: string[], timeoutMs?: number}} [options]
   * @returns {Promise<object>} the reply frame; rejects with RequestError
   */
  request(type, data, { projectId, replyTypes, timeoutMs = REPLY_TIMEOUT_MS } = {}) {
    if (!this.ws || this.state !== "connected") {
      return Promise.reject(new RequestError({ code: "DISCONNECTED", message: "offline" }));
    }
    const requestId = `r${this.nextId++}`;
    const frame = { type, request_id: requestId };
    if (projectId) frame.project_id = projectId;
    if (data) frame.data = data;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new RequestError({ code: "TIMEOUT", message: "no reply from the server" }));
      }, timeoutMs);
      this.pending.set(requestId, { resolve, reject, timer, replyTypes: replyTypes || [type] });
      this.ws.send(JSON.stringify(frame));
    });
  }

  setState(state, retryAt) {
    if (state === this.state && retryAt === this.retryAt) return;
    this.state = state;
    this.retryAt = retryAt;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, retryAt } }));
  }
}

/** Formatting of numbers, times and sizes for display. */

/**
 * A duration in milliseconds as "850 ms", "8.1 s", "2 min 05 s".
 * @param {number|null|undefined} ms
 * @returns {string}
 */
export function duration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}

/**
 * A cost in US dollars as "$0.0012" (four decimals), or "—" when unknown.
 * @param {number|null|undefined} usd
 * @returns {string}
 */
export function cost(usd) {
  if (typeof usd !== "number" || !Number.isFinite(usd)) return "—";
  return `$${usd.toFixed(4)}`;
}

/**
 * A byte count as "512 B", "4.2 KB", "5.0 MB".
 * @param {number} n
 * @returns {string}
 */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/**
 * An RFC 3339 time as a short local time ("14:05"), or "" when unparsable.
 * @param {string|undefined} iso
 * @returns {string}
 */
export function clock(iso) {
  const t = iso ? new Date(iso) : null;
  if (!t || Number.isNaN(t.getTime())) return "";
  return t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/**
 * The last component of a path, for short titles.
 * @param {string} path
 * @returns {string}
 */
export function basename(path) {
  const parts = String(path || "").split("/").filter(Boolean);
  return parts.length ? parts[parts.length - 1] : "/";
}

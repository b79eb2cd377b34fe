/** The pairing token: taken from "#token=", kept in localStorage, checked via /health. */

const KEY = "pocket-agent.token";

/**
 * Move a "#token=" from the address bar into localStorage and scrub it (history is
 * replaced, so the token is not left in the history or a shared screenshot).
 * Other fragment parameters (e.g. "project=") are kept.
 * @returns {boolean} whether a token was found in the fragment
 */
export function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token === null) return false;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  const fresh = token.trim();
  if (fresh) {
    const before = loadToken();
    replaced = before && before !== fresh ? before : null;
    saveToken(fresh);
  }
  return Boolean(fresh);
}

let replaced = null; // the stored token a "#token=" link replaced, until the new one works

/**
 * A "#token=" link whose token the server refuses must not cost the pairing it replaced
 * (a link can come from anywhere, even from Claude's own text): put the previous token
 * back. False when there was none.
 * @param {string|null} refused
 * @returns {boolean}
 */
export function restoreReplacedToken(refused) {
  if (!replaced || refused === replaced) return false;
  const previous = replaced;
  replaced = null;
  if (loadToken() === refused) saveToken(previous);
  else memoryToken = previous;
  return true;
}

/** The new token worked: what it replaced is gone for good. */
export function tokenAccepted() {
  replaced = null;
}

/** @returns {string|null} the stored token */
export function loadToken() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

/** @param {string} token */
export function saveToken(token) {
  try {
    localStorage.setItem(KEY, token);
  } catch {
    /* private mode: the token lives for this page only */
  }
  memoryToken = token;
}

/**
 * Forget the token after the server refused it; another tab may have stored a newer
 * one meanwhile, which stays.
 * @param {string|null} [refused] the token that was refused (default: the current one)
 */
export function clearToken(refused = currentToken()) {
  try {
    if (localStorage.getItem(KEY) === refused) localStorage.removeItem(KEY);
  } catch {
    /* nothing stored */
  }
  if (memoryToken === refused) memoryToken = null;
}

let memoryToken = null;

/** @returns {string|null} the token to use: stored, else the one typed this session */
export function currentToken() {
  return loadToken() || memoryToken;
}

/**
 * Ask GET /health with the token: a browser sees a refused WebSocket upgrade only as
 * close 1006, so this is how the page learns whether the token is wrong.
 * @param {string} token
 * @returns {Promise<"ok"|"refused"|"throttled"|"unreachable">}
 */
export async function checkToken(token) {
  try {
    const response = await fetch("/health", {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    });
    if (response.status === 401) return "refused";
    if (response.status === 429) return "throttled";
    return "ok";
  } catch {
    return "unreachable";
  }
}

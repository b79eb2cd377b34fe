/** In-page notifications while the tab is hidden (a prompt waits, a run ended).
 * Permission is asked only from a user gesture (the "Notify me" button). */

/** @returns {boolean} whether the browser can show notifications from this page */
export function supported() {
  return typeof window.Notification === "function";
}

/** @returns {"granted"|"denied"|"default"|"unsupported"} */
export function permission() {
  return supported() ? Notification.permission : "unsupported";
}

/**
 * Ask for permission; call only from a click handler.
 * @returns {Promise<string>} the new permission
 */
export async function ask() {
  if (!supported()) return "unsupported";
  try {
    return await Notification.requestPermission();
  } catch {
    return Notification.permission;
  }
}

/**
 * Show a notification when the page is hidden and notifications are allowed.
 * @param {string} title
 * @param {string} body
 * @param {{tag?: string, onClick?: () => void}} [options]
 */
export function notify(title, body, { tag, onClick } = {}) {
  if (!supported() || Notification.permission !== "granted" || document.visibilityState !== "hidden") return;
  try {
    const n = new Notification(title, { body, tag, icon: "/favicon.svg" });
    n.addEventListener("click", () => {
      window.focus();
      if (onClick) onClick();
      n.close();
    });
  } catch {
    // Android Chrome allows notifications only from a service worker.
  }
}

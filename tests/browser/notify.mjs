/**
 * In-page notifications (SPEC §11): while the tab is hidden and notifications are
 * allowed, a permission prompt arriving and a run ending each create a Notification
 * naming the project and the tool / the outcome; while the tab is visible, none.
 *
 * The page is given, before any of its scripts run (addInitScript), a window.Notification
 * that records every construction (permission "granted"), and a document whose
 * visibilityState / hidden the test switches, dispatching visibilitychange as a browser
 * does. The real permission is granted too, so nothing depends on which one the app reads.
 */

import {
  approvalSheet,
  button,
  env,
  log,
  openProject,
  scenario,
  sendPrompt,
  TIMEOUT,
  waitConnected,
  waitFooter,
} from './harness.mjs';

/** Installed in the page before the app loads: a recording Notification, a switchable tab. */
function instrument() {
  const made = [];
  class RecordingNotification extends EventTarget {
    constructor(title, options = {}) {
      super();
      made.push({ title: String(title), body: String(options.body ?? ''), tag: options.tag ?? '' });
    }
    close() {}
    static get permission() {
      return 'granted';
    }
    static requestPermission() {
      return Promise.resolve('granted');
    }
  }
  Object.defineProperty(window, 'Notification', {
    configurable: true,
    writable: true,
    value: RecordingNotification,
  });
  let hidden = false;
  Object.defineProperty(Document.prototype, 'visibilityState', {
    configurable: true,
    get: () => (hidden ? 'hidden' : 'visible'),
  });
  Object.defineProperty(Document.prototype, 'hidden', {
    configurable: true,
    get: () => hidden,
  });
  window.__notifications = made;
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event('visibilitychange'));
  };
}

/** The notifications the page has created so far. */
function made(page) {
  return page.evaluate(() => window.__notifications.slice());
}

/** Wait until a notification matching `test` exists; returns it. */
async function waitNotification(page, what, test) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const found = (await made(page)).find(test);
    if (found) return found;
    if (Date.now() > deadline) {
      throw new Error(`no notification ${what}; made: ${JSON.stringify(await made(page))}`);
    }
    await page.waitForFunction(
      (n) => window.__notifications.length > n,
      (await made(page)).length,
      { timeout: Math.max(1, deadline - Date.now()) },
    ).catch(() => {});
  }
}

scenario('notify', async (session) => {
  const path = env('PA_PROJECT');
  const name = path.split('/').filter(Boolean).pop();
  const page = await session.newPage();
  await page.context().grantPermissions(['notifications'], { origin: env('PA_ORIGIN') });
  await page.addInitScript(instrument);
  await page.goto(env('PA_URL'));
  await waitConnected(page);
  await openProject(page, path);
  const sheet = approvalSheet(page);

  // Visible tab: a prompt and a run end, and no notification at all.
  await sendPrompt(page, `fake:ask_write:${path}/visible.txt:seen`);
  await sheet.waitFor();
  await button(sheet, 'Allow').click();
  await sheet.waitFor({ state: 'hidden' });
  await waitFooter(page, 0, 'success', '$0.0123');
  const whileVisible = await made(page);
  if (whileVisible.length) {
    throw new Error(`notifications while the tab was visible: ${JSON.stringify(whileVisible)}`);
  }
  log('visible tab: a prompt and a run end, no notification');

  // Hidden tab: the prompt and the run end each make one, naming project and tool/outcome.
  await page.evaluate(() => window.__setHidden(true));
  await sendPrompt(page, `fake:ask_write:${path}/hidden.txt:unseen`);
  await sheet.waitFor();
  const ask = await waitNotification(page, 'for the prompt', (n) => /\bWrite\b/.test(n.title));
  if (!`${ask.title} ${ask.body}`.includes(name)) {
    throw new Error(`the prompt's notification does not name the project ${name}: ${JSON.stringify(ask)}`);
  }
  log(`prompt: ${JSON.stringify(ask)}`);
  await button(sheet, 'Allow').click();
  await sheet.waitFor({ state: 'hidden' });
  await waitFooter(page, 1, 'success', '$0.0123');
  const end = await waitNotification(page, 'for the run end', (n) => /\bsuccess\b/.test(`${n.title} ${n.body}`));
  if (!`${end.title} ${end.body}`.includes(name)) {
    throw new Error(`the run end's notification does not name the project ${name}: ${JSON.stringify(end)}`);
  }
  log(`run end: ${JSON.stringify(end)}`);
  const all = await made(page);
  if (all.length !== 2) throw new Error(`expected exactly 2 notifications: ${JSON.stringify(all)}`);

  // Visible again: another prompt makes none.
  await page.evaluate(() => window.__setHidden(false));
  await sendPrompt(page, `fake:ask_write:${path}/again.txt:seen`);
  await sheet.waitFor();
  await button(sheet, 'Allow').click();
  await waitFooter(page, 2, 'success', '$0.0123');
  const after = await made(page);
  if (after.length !== 2) throw new Error(`notified while visible again: ${JSON.stringify(after)}`);
  log('visible again: no notification');
});

/**
 * Screenshots of every screen at 390x844, light and dark, for docs/screenshots/, and
 * the page weight of a first load. Run by bench/screenshots.py, which starts the daemon
 * with the fake claude and prepares the project directories; see its docstring.
 *
 * Environment: as harness.mjs, plus PA_HOME (the directory holding the projects
 * webshop/, notes/, tomato-tracker/) and PA_OUT (where the PNGs go).
 */

import { join } from 'node:path';
import {
  approvalSheet,
  button,
  env,
  footers,
  log,
  openProject,
  pairedPage,
  projectItem,
  scenario,
  sendPrompt,
  textbox,
  waitConnected,
  waitFooter,
} from './harness.mjs';

const out = env('PA_OUT');
const home = env('PA_HOME');
const written = [];

/** Screenshot the viewport in light and in dark, as <name>-light.png / <name>-dark.png. */
async function shoot(page, name) {
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
    const path = join(out, `${name}-${scheme}.png`);
    await page.screenshot({ path, animations: 'disabled', caret: 'hide' });
    written.push(path);
  }
  await page.emulateMedia({ colorScheme: 'light' });
  log(`shot ${name}`);
}

/** Bytes transferred and time until connected, for a first load in a fresh context. */
async function measureFirstLoad(session) {
  const page = await session.newPage();
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  let bytes = 0;
  let requests = 0;
  cdp.on('Network.loadingFinished', (event) => {
    bytes += event.encodedDataLength;
    requests += 1;
  });
  const t0 = Date.now();
  await page.goto(env('PA_URL'));
  await waitConnected(page);
  const connected = Date.now() - t0;
  await textbox(page, 'Project path').waitFor();
  const interactive = Date.now() - t0;
  const timing = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    return { domContentLoaded: Math.round(nav.domContentLoadedEventEnd) };
  });
  log(
    `first load: ${requests} requests, ${bytes} bytes transferred (uncompressed, no cache); ` +
      `DOMContentLoaded ${timing.domContentLoaded} ms, connected ${connected} ms, ` +
      `projects screen usable ${interactive} ms after navigation start`,
  );
  await page.context().close();
}

scenario('screenshots', async (session) => {
  await measureFirstLoad(session);

  // Pairing: a fresh phone opening the address without a token.
  const fresh = await session.newPage();
  await fresh.goto(`${env('PA_ORIGIN')}/`);
  await textbox(fresh, 'Token').waitFor();
  await shoot(fresh, 'pairing');
  await fresh.context().close();

  const page = await pairedPage(session);
  for (const name of ['notes', 'tomato-tracker', 'webshop']) {
    await textbox(page, 'Project path').fill(`${home}/${name}`);
    await button(page, 'Create project').click();
    // Creating opens the conversation, or lists the project: back to the list either way.
    await textbox(page, 'Prompt').or(projectItem(page, `${home}/${name}`)).first().waitFor();
    if (await textbox(page, 'Prompt').isVisible()) await page.goBack();
    await projectItem(page, `${home}/${name}`).first().waitFor();
  }

  await openProject(page, `${home}/tomato-tracker`);
  await sendPrompt(
    page,
    'Plan the **tomato tracker**:\n\n1. a `plants` table\n2. a harvest log\n\n' +
      '```sql\nCREATE TABLE plants (id INTEGER PRIMARY KEY, variety TEXT);\n```',
  );
  await waitFooter(page, 0, 'success', '$0.0123');
  await shoot(page, 'conversation-markdown');

  await page.goBack();
  await openProject(page, `${home}/webshop`);
  const sheet = approvalSheet(page);
  await sendPrompt(page, `fake:ask_edit:${home}/webshop/shop.py:PRICE = 10:PRICE = 12`);
  await sheet.waitFor();
  await shoot(page, 'approval');
  await button(sheet, 'Allow').click();
  await waitFooter(page, 0, 'success', '$0.0123');
  await sendPrompt(page, 'fake:ask_bash:pytest -q tests/test_shop.py');
  await sheet.waitFor();
  await button(sheet, 'Allow').click();
  await waitFooter(page, 1, 'success', '$0.0123');
  await shoot(page, 'conversation-tools');

  // An error: a failed run, shown in red with its footer.
  await sendPrompt(page, 'fake:fail');
  await waitFooter(page, 2, 'failed', /\$\d+\.\d{4}|—/);
  await shoot(page, 'error');

  // A pending approval, seen from the projects screen (badge).
  await sendPrompt(page, `fake:ask_write:${home}/webshop/NOTES.md:remember the milk`);
  await sheet.waitFor();
  const list = await pairedPage(session);
  await list.locator('.badge-approval').first().waitFor();
  await shoot(list, 'projects');
  await button(sheet, 'Deny').click();
  await waitFooter(page, 3, 'success', '$0.0123');
  log(`${await footers(page).count()} runs; wrote:\n  ${written.join('\n  ')}`);
});

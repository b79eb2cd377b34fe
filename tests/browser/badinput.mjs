/**
 * Bad input does not break the page (issue 10): Records of a type the app does not know
 * are shown as collapsed JSON (a <details> naming the type, its body built only when
 * opened), never an exception; a 5 MB line is cut with a "Show all" button and the page
 * stays responsive (the run's footer arrives, the composer answers) without freezing.
 */

import {
  RUN_TIMEOUT,
  button,
  env,
  footers,
  log,
  openProject,
  pairedPage,
  scenario,
  sendPrompt,
  textbox,
  waitFooter,
} from './harness.mjs';

const ANY_COST = /\$\d+\.\d{4}|—/;
const BIG = 5_000_000;

scenario('badinput', async (session) => {
  const page = await pairedPage(session);
  await openProject(page, env('PA_PROJECT'));

  // Three JSON lines {"type":"flood","pad":"xx.."} of 400 bytes: unknown to the app.
  await sendPrompt(page, 'fake:flood:1200:400');
  await waitFooter(page, 0, 'success', ANY_COST);
  const unknown = page.locator('[data-seq] details').filter({ hasText: 'flood' });
  const count = await unknown.count();
  if (count !== 3) throw new Error(`expected 3 collapsed flood records, found ${count}`);
  const first = unknown.first();
  if (await first.evaluate((node) => node.open)) throw new Error('an unknown record is open');
  await first.locator('summary').click();
  await first.getByText('"pad"').first().waitFor();
  log('unknown records shown collapsed, opened on demand');

  // One tool_result of 5 MB: cut, with "Show all"; the page keeps answering.
  const started = Date.now();
  await sendPrompt(page, `fake:big_line:${BIG}`);
  await waitFooter(page, 1, 'success', ANY_COST, RUN_TIMEOUT);
  const took = Date.now() - started;
  const showAll = button(page, /^Show all/).last();
  await showAll.waitFor();
  const shown = await page.locator('[data-seq]').evaluateAll((nodes) =>
    Math.max(...nodes.map((node) => node.textContent.length)),
  );
  if (shown >= BIG) throw new Error(`the 5 MB line was rendered whole (${shown} characters)`);
  // Responsive: typing into the composer is reflected at once.
  const probe = Date.now();
  await textbox(page, 'Prompt').fill('still here');
  const typed = Date.now() - probe;
  if (typed > 2000) throw new Error(`the composer took ${typed} ms to take a line`);
  log(`5 MB line: footer after ${took} ms, cut to ${shown} characters, typing ${typed} ms`);
  if ((await footers(page).count()) !== 2) throw new Error('expected two run footers');
});

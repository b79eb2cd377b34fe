/**
 * Older history (SPEC §11): a run of a few hundred records, then a reload shows only the
 * newest page with "Load older" at the top; pressing it until the first record is there
 * brings back every record exactly once, without a gap.
 */

import {
  assertContiguous,
  assertUniqueSeqs,
  button,
  env,
  log,
  openProject,
  pairedPage,
  reloadProject,
  records,
  RUN_TIMEOUT,
  scenario,
  sendPrompt,
  waitFooter,
} from './harness.mjs';

const PARTS = 300;

scenario('history', async (session) => {
  const path = env('PA_PROJECT');
  const page = await pairedPage(session);
  await openProject(page, path);
  await sendPrompt(page, `fake:slow:${PARTS}:0`);
  await waitFooter(page, 0, 'success', '$0.0123', RUN_TIMEOUT);
  const live = await records(page);
  assertUniqueSeqs(live, 'live');

  await reloadProject(page, path);
  await page.getByText(`part ${PARTS}/${PARTS}`).first().waitFor();
  const first = page.locator('[data-seq]').filter({ hasText: `part 1/${PARTS}` });
  const older = button(page, 'Load older');
  let clicks = 0;
  while (!(await first.count())) {
    const shown = await page.locator('[data-seq]').count();
    await older.click();
    clicks += 1;
    await page.waitForFunction((n) => document.querySelectorAll('[data-seq]').length > n, shown);
    if (clicks > 50) throw new Error('Load older never reached the first record');
  }
  if (clicks === 0) throw new Error('the reloaded page showed all history at once: no Load older');
  const all = await records(page);
  assertUniqueSeqs(all, 'after Load older');
  assertContiguous(
    all.map(([seq]) => seq),
    'after Load older',
  );
  // The last part may also be the run's result text; every other one is in one record.
  for (let i = 1; i < PARTS; i += 1) {
    const n = all.filter(([, text]) => text.includes(`part ${i}/${PARTS}`)).length;
    if (n !== 1) throw new Error(`"part ${i}/${PARTS}" shown ${n} times`);
  }
  log(`${clicks} Load older presses, ${all.length} records, each once`);
});

/**
 * Older history on scroll (issue 10, SPEC §11 "scrolling may also load them"): after a
 * reload only the newest page is shown; scrolling the conversation to its top loads the
 * older pages one by one, without pressing Load older, every record exactly once.
 */

import {
  assertContiguous,
  assertUniqueSeqs,
  env,
  log,
  openProject,
  pairedPage,
  records,
  scenario,
  sendPrompt,
  waitFooter,
} from './harness.mjs';

const PARTS = 250;

scenario('scroll', async (session) => {
  const page = await pairedPage(session);
  await openProject(page, env('PA_PROJECT'));
  await sendPrompt(page, `fake:slow:${PARTS}:0`);
  await waitFooter(page, 0, 'success', /\$\d+\.\d{4}|—/);
  await page.reload();
  await page.getByText(`part ${PARTS}/${PARTS}`).first().waitFor();
  const first = page.locator('[data-seq]').filter({ hasText: `part 1/${PARTS}` });
  const transcript = page.getByRole('log', { name: 'Conversation' });
  let scrolls = 0;
  while (!(await first.count())) {
    const shown = await page.locator('[data-seq]').count();
    await transcript.evaluate((node) => {
      node.scrollTop = 0;
    });
    scrolls += 1;
    await page.waitForFunction((n) => document.querySelectorAll('[data-seq]').length > n, shown);
    if (scrolls > 50) throw new Error('scrolling up never reached the first record');
  }
  if (scrolls === 0) throw new Error('the reloaded page showed all history at once');
  const all = await records(page);
  assertUniqueSeqs(all, 'after scrolling up');
  assertContiguous(
    all.map(([seq]) => seq),
    'after scrolling up',
  );
  log(`${scrolls} scrolls to the top, ${all.length} records, each once`);
});

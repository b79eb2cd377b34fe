/**
 * A conversation (SPEC §11): create a project by path, send a prompt, see the answer and
 * the run footer (success, duration, cost), reload and see the same history again,
 * nothing rendered twice; /#project=<id> opens the conversation straight away.
 */

import {
  assertUniqueSeqs,
  env,
  footers,
  log,
  openProject,
  pairedPage,
  reloadProject,
  records,
  scenario,
  sendPrompt,
  textbox,
  waitConnected,
  waitFooter,
} from './harness.mjs';

scenario('conversation', async (session) => {
  const path = env('PA_PROJECT');
  const page = await pairedPage(session);
  await openProject(page, path);

  await sendPrompt(page, 'hello from the browser');
  await page.getByText('You said: hello from the browser').first().waitFor();
  await waitFooter(page, 0, 'success', '$0.0123');
  const before = await records(page);
  assertUniqueSeqs(before, 'live');

  await reloadProject(page, path);
  await page.getByText('You said: hello from the browser').first().waitFor();
  await waitFooter(page, 0, 'success', '$0.0123');
  const count = await footers(page).count();
  if (count !== 1) throw new Error(`after a reload ${count} run footers for one run`);
  const after = await records(page);
  assertUniqueSeqs(after, 'reloaded');
  const seqs = (recs) => JSON.stringify(recs.map(([seq]) => seq).sort((a, b) => a - b));
  if (seqs(after) !== seqs(before)) {
    throw new Error(`history after reload ${seqs(after)} differs from live ${seqs(before)}`);
  }
  log(`reload shows the same ${after.length} records`);

  const id = new URL(page.url()).hash.match(/project=([^&]+)/)?.[1];
  if (!id) throw new Error(`the conversation's address has no #project=<id>: ${page.url()}`);
  await page.goto('about:blank');
  await page.goto(`${env('PA_ORIGIN')}/#project=${id}`);
  await waitConnected(page);
  await page.getByText('You said: hello from the browser').first().waitFor();
  await textbox(page, 'Prompt').waitFor();
  log(`/#project=${id} opens the conversation`);
});

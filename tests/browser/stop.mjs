/**
 * Stop and Kill (SPEC §10/§11): Stop interrupts a hanging run (footer "interrupted"),
 * Kill kills the next one (footer "killed"), and the composer works again after each.
 */

import {
  button,
  env,
  log,
  openProject,
  pairedPage,
  scenario,
  sendPrompt,
  waitFooter,
} from './harness.mjs';

const ANY_COST = /\$\d+\.\d{4}|—/;

scenario('stop', async (session) => {
  const path = env('PA_PROJECT');
  const page = await pairedPage(session);
  page.on('dialog', (dialog) => {
    log(`confirm dialog: ${dialog.message()}`);
    dialog.accept();
  });
  await openProject(page, path);
  const working = page.getByText('Working on it...');

  await sendPrompt(page, 'fake:hang');
  await working.first().waitFor();
  await button(page, 'Stop').click();
  await waitFooter(page, 0, 'interrupted', ANY_COST);

  await sendPrompt(page, 'fake:hang');
  await working.nth(1).waitFor();
  await button(page, 'Kill').click();
  await waitFooter(page, 1, 'killed', ANY_COST);
  log('stopped and killed');
});

/**
 * Approvals (SPEC §10/§11): a Write the fake claude asks for opens the approval sheet
 * and puts a badge on the project in another page's project list; Allow lets it write
 * the file (pytest checks the file) and clears the badge; a second one is denied with a
 * reason, which the model gets back as the tool's error.
 */

import {
  approvalSheet,
  button,
  env,
  log,
  openProject,
  pairedPage,
  projectItem,
  scenario,
  sendPrompt,
  textbox,
  waitFooter,
} from './harness.mjs';

scenario('approvals', async (session) => {
  const path = env('PA_PROJECT');
  const page = await pairedPage(session);
  await openProject(page, path);

  await sendPrompt(page, `fake:ask_write:${path}/allowed.txt:written from the phone`);
  const sheet = approvalSheet(page);
  await sheet.waitFor();
  log(`sheet: ${JSON.stringify((await sheet.innerText()).slice(0, 200))}`);
  if (!(await sheet.getByText('allowed.txt').count())) {
    throw new Error('the approval sheet does not name the file to be written');
  }
  const list = await pairedPage(session);
  const badge = projectItem(list, path).locator('.badge-approval');
  await badge.waitFor();
  log(`projects screen of another page: badge ${JSON.stringify(await badge.innerText())}`);
  await button(sheet, 'Allow').click();
  await sheet.waitFor({ state: 'hidden' });
  await waitFooter(page, 0, 'success', '$0.0123');
  await badge.waitFor({ state: 'detached' });
  log('allowed');

  await sendPrompt(page, `fake:ask_write:${path}/denied.txt:must not exist`);
  await sheet.waitFor();
  await textbox(sheet, 'Reason').fill('not from the bus');
  await button(sheet, 'Deny').click();
  await sheet.waitFor({ state: 'hidden' });
  await waitFooter(page, 1, 'success', '$0.0123');
  await page.locator('[data-seq]').filter({ hasText: 'not from the bus' }).first().waitFor();
  log('denied with a reason; the reason is shown as the tool result');
});

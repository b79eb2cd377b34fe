/**
 * The approval sheet keeps what the user is doing (review of issue 10): a project_state
 * that changes nothing the sheet shows (another device saving the project's settings)
 * must not wipe a half-typed reason; a second prompt arriving shows "1 of 2" without
 * losing it either.
 */

import {
  approvalSheet,
  button,
  env,
  log,
  openProject,
  pairedPage,
  scenario,
  sendPrompt,
  textbox,
  waitFooter,
} from './harness.mjs';

const ANY_COST = /\$\d+\.\d{4}|—/;

scenario('sheet', async (session) => {
  const page = await pairedPage(session);
  await openProject(page, env('PA_PROJECT'));
  await sendPrompt(page, 'fake:ask_twice');
  const sheet = approvalSheet(page);
  await sheet.waitFor();
  const reason = textbox(sheet, 'Reason');
  await reason.fill('half-typed rea');
  await reason.focus();

  // Another device saves the settings: a project_state for this project, nothing new.
  const other = await session.newPage();
  await other.goto(env('PA_URL'));
  const projectId = new URL(page.url()).hash.match(/project=([^&]+)/)[1];
  await other.waitForFunction(() => window.pocketAgent?.connection?.state === 'connected');
  await other.evaluate(
    (id) =>
      window.pocketAgent.connection.request(
        'project_settings',
        { allowed_tools: ['Read'] },
        { projectId: id, replyTypes: ['project_state'] },
      ),
    projectId,
  );
  // Wait until this page has the new settings (its state was redrawn meanwhile).
  await page.waitForFunction(
    (id) =>
      window.pocketAgent.store.projects.get(id)?.settings?.allowed_tools?.includes('Read'),
    projectId,
  );
  const kept = await reason.inputValue();
  if (kept !== 'half-typed rea') throw new Error(`the reason was wiped: ${JSON.stringify(kept)}`);
  const focused = await reason.evaluate((node) => node === document.activeElement);
  if (!focused) throw new Error('the reason box lost the focus');
  log('a project_state left the reason and the focus alone');

  await reason.fill('not that one');
  await button(sheet, 'Deny').click();
  // The second prompt of the turn: the sheet shows it, with an empty reason.
  await sheet.filter({ hasText: 'second.txt' }).waitFor();
  if ((await textbox(sheet, 'Reason').inputValue()) !== '') throw new Error('stale reason');
  await button(sheet, 'Allow').click();
  await waitFooter(page, 0, 'success', ANY_COST);
  log('both prompts answered');
});

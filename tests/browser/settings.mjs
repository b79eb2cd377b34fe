/**
 * The project settings panel (Settings in the conversation header): "Allow always" on a
 * Bash prompt puts Bash(<first word>:*) in the panel's list; Remove takes it out, and a
 * second page with the panel open sees it go (it redraws from the store); unchecking
 * "Approvals from the phone" stores approvals "off", so the next run's prompt is denied
 * by claude on its own, without the sheet (the removed rule no longer allows it either).
 * A screenshot of the panel goes to $PA_SCRATCH/settings-panel.png.
 */

import { join } from 'node:path';
import {
  approvalSheet,
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
const RULE = 'Bash(ls:*)';

/** The open settings panel of a page (a region named "Project settings"). */
function panel(page) {
  return page.getByRole('region', { name: 'Project settings', exact: true });
}

/** The approvals checkbox of a page's panel. */
function approvalsBox(page) {
  return panel(page).getByRole('checkbox', { name: 'Approvals from the phone', exact: true });
}

/** What the page's store holds as the project's settings. */
function storedSettings(page, projectId) {
  return page.evaluate((id) => window.pocketAgent.store.projects.get(id)?.settings, projectId);
}

scenario('settings', async (session) => {
  const path = env('PA_PROJECT');
  const page = await pairedPage(session);
  await openProject(page, path);
  const projectId = decodeURIComponent(new URL(page.url()).hash.match(/project=([^&]+)/)[1]);

  await sendPrompt(page, 'fake:ask_bash:ls -la');
  const sheet = approvalSheet(page);
  await sheet.waitFor();
  await button(sheet, 'Allow always').click();
  await sheet.waitFor({ state: 'hidden' });
  await waitFooter(page, 0, 'success', ANY_COST);

  await button(page, 'Settings').click();
  const remove = button(panel(page), `Remove ${RULE}`);
  await remove.waitFor();
  await panel(page).getByText(RULE, { exact: true }).waitFor();
  if (!(await approvalsBox(page).isChecked())) throw new Error('approvals shown as off');
  await page.screenshot({ path: join(env('PA_SCRATCH'), 'settings-panel.png') });
  log(`panel: ${JSON.stringify(await panel(page).innerText())}`);

  // Another device, panel open on the same project.
  const other = await pairedPage(session);
  await openProject(other, path);
  await button(other, 'Settings').click();
  const otherRemove = button(panel(other), `Remove ${RULE}`);
  await otherRemove.waitFor();
  log('the second page lists the rule too');

  await remove.click();
  await remove.waitFor({ state: 'detached' });
  if ((await panel(page).getByRole('listitem').count()) !== 0) throw new Error('list not empty');
  await otherRemove.waitFor({ state: 'detached' });
  const afterRemove = await storedSettings(other, projectId);
  if (afterRemove?.allowed_tools?.length !== 0) {
    throw new Error(`second page still has rules: ${JSON.stringify(afterRemove)}`);
  }
  log('removed; the second page saw it go');

  await approvalsBox(page).uncheck();
  await page.waitForFunction(
    (id) => window.pocketAgent.store.projects.get(id)?.settings?.approvals === 'off',
    projectId,
  );
  await other.waitForFunction(
    () => document.querySelector('#settings-approvals')?.checked === false,
  );
  log(`approvals off: ${JSON.stringify(await storedSettings(page, projectId))}`);

  // The next run: no prompt comes to the phone, claude denies on its own.
  await sendPrompt(page, 'fake:ask_bash:ls -la');
  await waitFooter(page, 1, 'success', ANY_COST);
  await page.locator('[data-seq]').filter({ hasText: "haven't granted it yet" }).first().waitFor();
  if (await sheet.count()) throw new Error('a permission sheet came with approvals off');
  log('with approvals off the run was denied without asking');

  await approvalsBox(page).check();
  await page.waitForFunction(
    (id) => window.pocketAgent.store.projects.get(id)?.settings?.approvals === 'phone',
    projectId,
  );
  await other.waitForFunction(() => document.querySelector('#settings-approvals')?.checked);
  log('approvals back on, on both pages');
});

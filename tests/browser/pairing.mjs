/**
 * Pairing (SPEC §11): the #token= link pairs the page (token kept in localStorage, the
 * fragment scrubbed from the address bar), a reload stays paired, a wrong token leads
 * to the pairing screen with a message, and the Token box + Pair fix it. A wrong
 * "#token=" link opened in a paired page (a link from anywhere: even from Claude's text)
 * does not cost the pairing it would have replaced.
 */

import {
  button,
  env,
  log,
  pairedPage,
  scenario,
  statusIs,
  textbox,
  TIMEOUT,
  waitConnected,
} from './harness.mjs';

const TOKEN_KEY = 'pocket-agent.token';
const REFUSAL = /refused|rejected|invalid|wrong|not accepted|unauthori[sz]ed|not valid|denied/i;

scenario('pairing', async (session) => {
  const token = env('PA_TOKEN');
  const origin = env('PA_ORIGIN');

  const page = await pairedPage(session);
  const url = page.url();
  if (url.includes('token=') || url.includes(token)) {
    throw new Error(`the token is still in the address bar: ${url}`);
  }
  const stored = await page.evaluate((key) => localStorage.getItem(key), TOKEN_KEY);
  if (stored !== token) throw new Error(`localStorage[${TOKEN_KEY}] is ${JSON.stringify(stored)}`);
  log(`paired; address bar ${url}`);

  await page.reload();
  await waitConnected(page);
  log('still connected after a reload, from localStorage');

  // A link with a wrong token, in the paired page: refused, and the pairing stays.
  await session.withNetworkMessages(async () => {
    await page.evaluate(() => {
      location.hash = `token=planted-${Date.now()}`;
    });
    await page.waitForFunction(() => !location.hash.includes('token='));
    await page.waitForFunction(
      ([key, good]) => localStorage.getItem(key) === good,
      [TOKEN_KEY, token],
    );
    await waitConnected(page);
  });
  if (await textbox(page, 'Token').count()) throw new Error('a planted link unpaired the page');
  log('a wrong #token= link in a paired page: refused, the pairing kept');

  const bad = await session.newPage();
  await session.withNetworkMessages(async () => {
    await bad.goto(`${origin}/#token=not-the-token-${Date.now()}`);
    await textbox(bad, 'Token').waitFor();
    await button(bad, 'Pair').waitFor();
    await bad.getByText(REFUSAL).first().waitFor();
    if (await statusIs(bad, 'connected').count()) {
      throw new Error('a wrong token shows "connected"');
    }
    log(`wrong token: pairing screen says ${JSON.stringify(await bad.getByText(REFUSAL).first().innerText())}`);
    if (bad.url().includes('token=')) throw new Error(`fragment kept: ${bad.url()}`);
  });

  await textbox(bad, 'Token').fill(token);
  await button(bad, 'Pair').click();
  await waitConnected(bad, TIMEOUT);
  await textbox(bad, 'Token').waitFor({ state: 'hidden' });
  const fixed = await bad.evaluate((key) => localStorage.getItem(key), TOKEN_KEY);
  if (fixed !== token) throw new Error(`after Pair, localStorage holds ${JSON.stringify(fixed)}`);
  log('typed token + Pair: connected');
});

/**
 * Shared harness of the browser scenarios: launch Debian's chromium through
 * playwright-core, open pages on the daemon's app, find things only by the names and
 * attributes of the contract (SPEC §11), collect console and page errors, and turn any
 * failure into a non-zero exit with a screenshot and the DOM saved for the report.
 *
 * Environment (set by tests/e2e/test_browser.py):
 *   PA_URL      https://127.0.0.1:<port>/#token=<token>  (the pairing link)
 *   PA_ORIGIN   https://127.0.0.1:<port>
 *   PA_TOKEN    the daemon's token
 *   PA_PROJECT  an existing directory under the daemon's allowed root, for this scenario
 *   PA_SCRATCH  where failure screenshots and DOM dumps go
 *   PA_CHROMIUM the browser binary (default /usr/bin/chromium)
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** Default deadline of every wait, in ms: generous for 2 busy cores, never a sleep. */
export const TIMEOUT = 15_000;

/** Deadline for a whole Claude run to end (the fake's slow scenarios take seconds). */
export const RUN_TIMEOUT = 30_000;

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Console messages Chromium itself prints when a WebSocket or a fetch fails at the
 * network level, or a WebSocket upgrade / request is refused (401). SPEC §11 allows
 * exactly these, and only while a scenario has declared the network down or a token bad.
 */
const NETWORK_MESSAGE =
  /^(WebSocket connection to '[^']*' failed|Failed to load resource: (net::ERR_|the server responded with a status of 40[13]))/;

/**
 * The environment variable `name`; exits with a clear message when it is missing.
 * @param {string} name
 * @returns {string}
 */
export function env(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`browser scenario: environment variable ${name} is not set`);
    process.exit(2);
  }
  return value;
}

/** Escape a string for use inside a RegExp. */
export function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Log one step of a scenario (pytest shows this output on failure). */
export function log(...parts) {
  const t = ((Date.now() - started) / 1000).toFixed(2);
  console.log(`[${t}s]`, ...parts);
}

const started = Date.now();

/**
 * One browser for a scenario file, with its pages and the errors they reported.
 */
export class Session {
  constructor(browser, name) {
    this.browser = browser;
    this.name = name;
    /** @type {string[]} every console error / page error not allowed at that moment */
    this.errors = [];
    /** @type {string[]} allowed network messages, shown in the log */
    this.allowed = [];
    this.networkMessagesAllowed = 0;
    /** @type {import('playwright-core').Page[]} */
    this.pages = [];
  }

  /**
   * A new page in a fresh context (own localStorage), phone-sized, errors collected.
   * @param {{width?: number, height?: number, colorScheme?: 'light'|'dark'}} [options]
   */
  async newPage(options = {}) {
    const context = await this.browser.newContext({
      ignoreHTTPSErrors: true,
      viewport: { width: options.width ?? 390, height: options.height ?? 844 },
      colorScheme: options.colorScheme ?? 'light',
      serviceWorkers: 'allow',
    });
    context.setDefaultTimeout(TIMEOUT);
    const page = await context.newPage();
    const label = `page${this.pages.length + 1}`;
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      const text = message.text();
      if (this.networkMessagesAllowed > 0 && NETWORK_MESSAGE.test(text)) {
        this.allowed.push(`${label}: ${text}`);
      } else {
        const where = message.location();
        this.errors.push(`${label} console.error: ${text} (${where.url}:${where.lineNumber})`);
      }
    });
    page.on('pageerror', (error) => {
      this.errors.push(`${label} page error: ${error.stack || error.message}`);
    });
    page.on('crash', () => this.errors.push(`${label} crashed`));
    this.pages.push(page);
    return page;
  }

  /**
   * Run `body` while the browser's own network messages are expected (the test took the
   * network down, or presents a bad token); everything else still counts as an error.
   * @template T
   * @param {() => Promise<T>} body
   * @returns {Promise<T>}
   */
  async withNetworkMessages(body) {
    this.networkMessagesAllowed += 1;
    try {
      return await body();
    } finally {
      this.networkMessagesAllowed -= 1;
    }
  }

  /** Fail now if any page has logged an error so far. */
  assertNoErrors() {
    if (this.errors.length) {
      throw new Error(`errors in the browser console:\n  ${this.errors.join('\n  ')}`);
    }
  }
}

/**
 * Run a scenario: launch the browser, run `body(session)`, check the console, and exit
 * 0 on success or 1 with the failure, a screenshot and the DOM of every page saved in
 * $PA_SCRATCH.
 * @param {string} name
 * @param {(session: Session) => Promise<void>} body
 */
export async function scenario(name, body) {
  const scratch = env('PA_SCRATCH');
  mkdirSync(scratch, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.PA_CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  const session = new Session(browser, name);
  let failure = null;
  try {
    log(`scenario ${name}: chromium ${browser.version()}`);
    await body(session);
    session.assertNoErrors();
  } catch (error) {
    failure = error;
  }
  if (failure) {
    console.error(`\nFAILED ${name}: ${failure.stack || failure}`);
    if (session.errors.length) {
      console.error(`console/page errors:\n  ${session.errors.join('\n  ')}`);
    }
    for (const [i, page] of session.pages.entries()) {
      if (page.isClosed()) continue;
      const base = join(scratch, `${name}-page${i + 1}`);
      try {
        await page.screenshot({ path: `${base}.png`, fullPage: true, timeout: 5000 });
        writeFileSync(`${base}.html`, await page.content());
        console.error(`page${i + 1} at ${page.url()}: saved ${base}.png and ${base}.html`);
      } catch (error) {
        console.error(`page${i + 1}: could not save artefacts: ${error.message}`);
      }
    }
  }
  if (session.allowed.length) {
    log(`allowed network messages:\n  ${session.allowed.join('\n  ')}`);
  }
  await browser.close();
  log(failure ? `scenario ${name} FAILED` : `scenario ${name} passed`);
  process.exit(failure ? 1 : 0);
}

// ------------------------------------------------------------------ locators

/**
 * The connection state element whose text starts with `word` (SPEC §11: role="status",
 * text starting with connected / connecting / offline).
 * @param {import('playwright-core').Page} page
 * @param {'connected'|'connecting'|'offline'} word
 */
export function statusIs(page, word) {
  return page.getByRole('status').filter({ hasText: new RegExp(`^\\s*${word}`) });
}

/** Wait until the page says it is connected. */
export async function waitConnected(page, timeout = TIMEOUT) {
  await statusIs(page, 'connected').first().waitFor({ timeout });
}

/** A button by its exact accessible name. */
export function button(scope, name) {
  return scope.getByRole('button', { name, exact: true });
}

/** The text box labelled `name` (Prompt, Project path, Token, Reason). */
export function textbox(scope, name) {
  return scope.getByRole('textbox', { name, exact: true });
}

/** The project list item (button or link) whose name starts with `path`. */
export function projectItem(page, path) {
  const name = new RegExp(`^\\s*${escapeRegExp(path)}(?![\\w./-])`);
  return page.getByRole('button', { name }).or(page.getByRole('link', { name }));
}

/** The approval sheet (role="dialog", name starting "Permission"). */
export function approvalSheet(page) {
  return page.getByRole('dialog', { name: /^\s*Permission/ });
}

/** All run footers of the open conversation. */
export function footers(page) {
  return page.locator('.run-footer');
}

/** Duration as a footer may show it: 12 ms, 1.2 s, 3s, 1m 2s, 0:03. */
export const DURATION = /\d+(\.\d+)?\s*(ms|s|m)\b|\d+:\d\d/;

/**
 * Wait for footer number `index` (0-based) to show `outcome`, a duration and `cost`,
 * and return its text.
 * @param {import('playwright-core').Page} page
 * @param {number} index
 * @param {string} outcome
 * @param {string|RegExp} cost e.g. '$0.0123' or '—'
 */
export async function waitFooter(page, index, outcome, cost, timeout = RUN_TIMEOUT) {
  const footer = footers(page).nth(index);
  await footer.filter({ hasText: new RegExp(`\\b${outcome}\\b`) }).waitFor({ timeout });
  const text = (await footer.innerText()).trim();
  if (!DURATION.test(text)) throw new Error(`run footer shows no duration: ${JSON.stringify(text)}`);
  const hasCost = typeof cost === 'string' ? text.includes(cost) : cost.test(text);
  if (!hasCost) throw new Error(`run footer ${JSON.stringify(text)} does not show the cost ${cost}`);
  log(`footer ${index + 1}: ${JSON.stringify(text)}`);
  return text;
}

// ------------------------------------------------------------------ flows

/**
 * Open the pairing link on a fresh page and wait until it is connected.
 * @param {Session} session
 * @param {object} [options] passed to Session.newPage
 */
export async function pairedPage(session, options = {}) {
  const page = await session.newPage(options);
  await page.goto(env('PA_URL'));
  await waitConnected(page);
  return page;
}

/**
 * Create the project at `path` from the projects screen (or find it when it already
 * exists) and open its conversation; returns once the Prompt box is there.
 * @param {import('playwright-core').Page} page
 * @param {string} path
 */
export async function openProject(page, path) {
  const item = projectItem(page, path).first();
  const pathBox = textbox(page, 'Project path');
  await pathBox.or(item).first().waitFor();
  if (!(await item.isVisible())) {
    await pathBox.fill(path);
    await button(page, 'Create project').click();
  }
  const prompt = textbox(page, 'Prompt');
  // Creating may open the conversation at once, or list the project: accept either.
  await prompt.or(item).first().waitFor();
  if (!(await prompt.isVisible())) await item.click();
  await prompt.waitFor();
  log(`project ${path} open at ${page.url()}`);
}

/**
 * Reload the page and get back to the conversation of `path`: the app may reopen it
 * (#project=) or show the projects list; returns once the Prompt box is there.
 * @param {import('playwright-core').Page} page
 * @param {string} path
 */
export async function reloadProject(page, path) {
  await page.reload();
  await waitConnected(page);
  const prompt = textbox(page, 'Prompt');
  const item = projectItem(page, path).first();
  await prompt.or(item).first().waitFor();
  if (!(await prompt.isVisible())) await item.click();
  await prompt.waitFor();
}

/**
 * Type `text` into Prompt and press Send.
 * @param {import('playwright-core').Page} page
 * @param {string} text
 */
export async function sendPrompt(page, text) {
  await textbox(page, 'Prompt').fill(text);
  await button(page, 'Send').click();
  log(`sent ${JSON.stringify(text)}`);
}

/**
 * Every rendered record of the page as [seq, text] pairs, in document order.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<Array<[number, string]>>}
 */
export async function records(page) {
  return page.locator('[data-seq]').evaluateAll((nodes) =>
    nodes.map((node) => [Number(node.getAttribute('data-seq')), node.textContent.trim()]),
  );
}

/**
 * Fail unless no two rendered record elements carry the same seq (nothing shown twice).
 * @param {Array<[number, string]>} recs
 */
export function assertUniqueSeqs(recs, what = 'page') {
  const seen = new Map();
  for (const [seq, text] of recs) {
    if (!Number.isInteger(seq) || seq < 1) throw new Error(`${what}: bad data-seq ${seq}`);
    if (seen.has(seq)) {
      throw new Error(
        `${what}: seq ${seq} rendered twice: ${JSON.stringify(seen.get(seq))} / ${JSON.stringify(text)}`,
      );
    }
    seen.set(seq, text);
  }
}

/**
 * Fail unless the seqs form one contiguous range (no record missed in between).
 * @param {number[]} seqs
 */
export function assertContiguous(seqs, what = 'page') {
  const sorted = [...seqs].sort((a, b) => a - b);
  for (let i = 1; i < sorted.length; i += 1) {
    if (sorted[i] !== sorted[i - 1] + 1) {
      throw new Error(`${what}: records ${sorted[i - 1]} and ${sorted[i]} have a gap: ${sorted}`);
    }
  }
}

/**
 * Hostile input stays inert (SPEC §11): HTML and script in everything the page shows —
 * the model's Markdown (javascript: links, <img onerror>, raw HTML, SVG, mXSS shapes),
 * a tool's file path and content, the server's preview diff of that write, a project
 * path — and in frames the real server would never send (a tool named with HTML, a
 * permission_request whose diff and description are HTML, injected through a WebSocket
 * route between page and daemon). Nothing runs (the payloads call window.__xss), the CSP
 * reports no violation (one would mean the sanitiser let something through), the DOM
 * holds no on* attribute, no javascript: URL and no script/iframe/object/embed outside
 * the page's own, and the token never appears in a URL the page requests or in its
 * console.
 */

import {
  approvalSheet,
  button,
  env,
  log,
  openProject,
  scenario,
  sendPrompt,
  textbox,
  waitConnected,
  waitFooter,
} from './harness.mjs';

const ANY_COST = /\$\d+\.\d{4}|—/;

/** Markdown / HTML the echo scenario sends back as the assistant's text. */
const MARKDOWN = [
  "[md link](javascript:window.__xss('md-link'))",
  "[md data](data:text/html,<script>parent.__xss('md-data')</script>)",
  '<img src=x onerror="window.__xss(\'img\')">',
  '<a href="javascript:window.__xss(\'raw-a\')">raw a</a>',
  '<svg onload="window.__xss(\'svg\')"><a href="javascript:window.__xss(\'svg-a\')"><text y="20">svg</text></a><animate onbegin="window.__xss(\'anim\')" attributeName="x" dur="1s"/></svg>',
  '<iframe srcdoc="<script>parent.__xss(\'iframe\')</script>"></iframe>',
  '<details open ontoggle="window.__xss(\'toggle\')"><summary>d</summary>x</details>',
  // Raw HTML is shown as text: a <style> is never parsed (it would log a CSP error).
  '<style>body{display:none}</style>',
  // mXSS through namespace confusion.
  '<math><mtext><table><mglyph><svg><mtext><textarea><path id="</textarea><img src=x onerror=window.__xss(\'mxss\')>"></path></textarea></mtext></svg></mglyph></table></mtext></math>',
  '<form action="javascript:window.__xss(\'form\')"><button>go</button></form>',
  '<object data="javascript:window.__xss(\'object\')"></object><embed src="javascript:window.__xss(\'embed\')">',
  '<script>window.__xss("script")</script>',
  '<a href="#token=EVIL">same-page fragment</a>',
  '[md token](#token=EVIL) and [md same origin](/#token=EVIL)',
  '![alt](x" onerror="window.__xss(\'md-img\'))',
];

/** HTML as a file name and as the content written (no ":" since the fake splits on it). */
const HTML_NAME = '<img src=x onerror=window.__xss(1)>.txt';
const HTML_CONTENT = "<script>window.__xss('content')</script><img src=x onerror=window.__xss('c2')>";

/** Installed before the app: record payload calls and CSP violations. */
function trap() {
  window.__hits = [];
  window.__csp = [];
  window.__xss = (what) => window.__hits.push(String(what));
  window.alert = (what) => window.__hits.push(`alert:${what}`);
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ''}`.trim());
  });
}

/** Fail on any payload that ran, CSP violation, or dangerous node in the page. */
async function assertInert(page, where) {
  const found = await page.evaluate(() => {
    const bad = [];
    for (const node of document.querySelectorAll('#app *')) {
      for (const attr of node.attributes) {
        if (/^on/i.test(attr.name)) bad.push(`${node.tagName} ${attr.name}`);
        if (/^\s*(javascript|data|vbscript):/i.test(attr.value) && /href|src|action|data/i.test(attr.name)) {
          bad.push(`${node.tagName} ${attr.name}=${attr.value.slice(0, 60)}`);
        }
      }
      if (/^(SCRIPT|IFRAME|OBJECT|EMBED|FRAME|BASE|META|LINK)$/.test(node.tagName)) bad.push(node.tagName);
    }
    // The app's own forms (the composer) aside, none inside what it renders.
    for (const node of document.querySelectorAll('#app [data-seq] form, #app .sheet form')) bad.push('FORM');
    for (const a of document.querySelectorAll('#app .md a[href]')) {
      if (a.target !== '_blank' || !/noopener/.test(a.rel)) bad.push(`link without target/rel: ${a.href}`);
    }
    return { bad, hits: window.__hits.slice(), csp: window.__csp.slice() };
  });
  if (found.hits.length) throw new Error(`${where}: payloads ran: ${found.hits.join(', ')}`);
  if (found.csp.length) throw new Error(`${where}: CSP violations (sanitiser gap): ${found.csp.join(' | ')}`);
  if (found.bad.length) throw new Error(`${where}: dangerous DOM: ${found.bad.join(' | ')}`);
  log(`${where}: inert`);
}

/** A pass-through route of /ws that can also hand the page frames of our own. */
async function proxy(page) {
  const state = { last: null, inject: null, frames: [] };
  await page.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    state.inject = (frame) => ws.send(JSON.stringify(frame));
    ws.onMessage((message) => server.send(message));
    server.onMessage((message) => {
      try {
        const frame = JSON.parse(message);
        state.frames.push(frame);
        if (frame.type === 'agent_message') state.last = frame;
      } catch {
        /* not ours to judge */
      }
      ws.send(message);
    });
  });
  return state;
}

scenario('attack', async (session) => {
  const token = env('PA_TOKEN');
  const base = env('PA_PROJECT');
  const page = await session.newPage();
  const seen = [];
  page.on('request', (request) => seen.push(request.url()));
  page.on('console', (message) => seen.push(`console: ${message.text()}`));
  await page.addInitScript(trap);
  const ws = await proxy(page);
  await page.goto(env('PA_URL'));
  await waitConnected(page);

  // A project whose path is HTML.
  const path = `${base}/<img src=x onerror=window.__xss('project')>`;
  await openProject(page, path);
  await assertInert(page, 'project path');

  // The model's Markdown: the prompt bubble (text) and the echo (Markdown) of each, in
  // two prompts (the daemon allows 10 runs a minute per project).
  const halves = [MARKDOWN.slice(0, 6), MARKDOWN.slice(6)];
  for (const [i, half] of halves.entries()) {
    await sendPrompt(page, half.join('\n\n'));
    await waitFooter(page, i, 'success', ANY_COST);
  }
  // Click every link the Markdown kept: none may run anything, navigate this page, or
  // touch the pairing (a "#token=" link planted in Claude's text stays text).
  const before = page.url();
  const paired = await page.evaluate(() => localStorage.getItem('pocket-agent.token'));
  for (const link of await page.locator('#app .md a[href]').all()) {
    const href = (await link.getAttribute('href')) || '';
    if (href.includes('token=')) throw new Error(`a link into the app survived: ${href}`);
    await link.click();
  }
  const after = await page.evaluate(() => localStorage.getItem('pocket-agent.token'));
  if (after !== paired) throw new Error('clicking links changed the stored token');
  for (const extra of page.context().pages()) if (extra !== page) await extra.close();
  if (page.url() !== before) throw new Error(`a Markdown link navigated the page to ${page.url()}`);
  await assertInert(page, 'assistant Markdown');

  // A Write whose path and content are HTML: the tool card and the server's preview diff.
  const n = halves.length;
  await sendPrompt(page, `fake:ask_write:${path}/${HTML_NAME}:${HTML_CONTENT}`);
  const sheet = approvalSheet(page);
  await sheet.waitFor();
  await assertInert(page, 'approval sheet of an HTML file name and content');
  await textbox(sheet, 'Reason').fill('<b>no</b>');
  await button(sheet, 'Deny').click();
  await waitFooter(page, n, 'success', ANY_COST);
  await assertInert(page, 'denied write with an HTML reason');

  // Frames no real server sends: a tool named with HTML and a permission_request whose
  // preview diff, description and tool name are HTML.
  const last = ws.last;
  if (!last) throw new Error('no agent_message seen through the route');
  const projectId = last.project_id;
  const seq = last.data.seq;
  const runId = last.data.run_id;
  const evil = "<img src=x onerror=window.__xss('frame')>";
  ws.inject({
    type: 'agent_message',
    project_id: projectId,
    data: {
      seq: seq + 1,
      run_id: runId,
      direction: 'claude',
      timestamp: last.data.timestamp,
      message: {
        type: 'assistant',
        message: {
          role: 'assistant',
          content: [{ type: 'tool_use', id: 'toolu_evil', name: evil, input: { file_path: evil, command: evil, [evil]: evil } }],
        },
      },
    },
  });
  ws.inject({
    type: 'agent_message',
    project_id: projectId,
    data: {
      seq: seq + 2,
      run_id: runId,
      direction: 'server',
      timestamp: last.data.timestamp,
      message: {
        type: 'permission_request',
        permission_id: 'perm-evil',
        tool_use_id: 'toolu_evil',
        tool_name: evil,
        display_name: evil,
        description: evil,
        decision_reason: evil,
        blocked_path: evil,
        kind: 'tool',
        input: { file_path: evil },
        preview: { kind: 'diff', path: evil, diff: `--- a/${evil}\n+++ b/${evil}\n@@ -1 +1 @@\n-${evil}\n+${evil}\n`, note: evil },
        created_at: '9999-01-01T00:00:00Z',
      },
    },
  });
  await page.locator(`[data-seq="${seq + 2}"]`).waitFor({ state: 'attached' });
  await sheet.waitFor();
  await assertInert(page, 'injected tool_use and permission_request with HTML');

  // The token: in localStorage, never in a URL the page asked for, nor in its console.
  const stored = await page.evaluate(() => localStorage.getItem('pocket-agent.token'));
  if (stored !== token) throw new Error(`the token is not kept in localStorage: ${stored}`);
  if (page.url().includes(token)) throw new Error(`the token is still in the address: ${page.url()}`);
  const leaks = seen.filter((entry) => entry.includes(token));
  // The first navigation carries it in the fragment (never sent to the server); nothing else.
  const others = leaks.filter((entry) => entry !== env('PA_URL'));
  if (others.length) throw new Error(`the token leaked into: ${others.join(' | ')}`);
  const history = await page.evaluate(() => history.length);
  log(`token: only in localStorage (${seen.length} requests / console lines checked, history ${history})`);
});

/**
 * Offline mid-run (SPEC §11): while the fake claude streams slowly, the page loses the
 * network; an always-online second page watches the run end; back online, the first
 * page rejoins and shows every record exactly once, the same records as the second.
 *
 * Chromium's offline emulation (context.setOffline) neither closes an open WebSocket nor
 * drops its frames: it holds them and delivers them once back online (measured on
 * Chromium 150). So the page is served through a TCP relay on 127.0.0.1 that the test
 * cuts at the same moment, which the page sees as a real network loss (close 1006).
 */

import net from 'node:net';
import {
  assertContiguous,
  assertUniqueSeqs,
  env,
  footers,
  log,
  openProject,
  pairedPage,
  RUN_TIMEOUT,
  records,
  scenario,
  sendPrompt,
  statusIs,
  waitConnected,
  waitFooter,
} from './harness.mjs';

const PARTS = 12;

/** A TCP relay to the daemon whose connections can all be cut at once. */
function relay(targetPort) {
  const sockets = new Set();
  let up = true;
  const server = net.createServer((client) => {
    if (!up) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ]) {
      sockets.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: server.address().port,
        cut() {
          up = false;
          for (const socket of sockets) socket.destroy();
        },
        restore() {
          up = true;
        },
        close() {
          up = false;
          for (const socket of sockets) socket.destroy();
          server.close();
        },
      });
    });
  });
}

scenario('offline', async (session) => {
  const path = env('PA_PROJECT');
  const origin = new URL(env('PA_ORIGIN'));
  const link = new URL(env('PA_URL'));
  const proxy = await relay(Number(origin.port));
  try {
    const peer = await pairedPage(session);
    await openProject(peer, path);

    const page = await session.newPage();
    link.port = String(proxy.port);
    await page.goto(link.href);
    await waitConnected(page);
    await openProject(page, path);

    await sendPrompt(page, `fake:slow:${PARTS}:0.25`);
    await page.getByText('part 2/').first().waitFor();
    await session.withNetworkMessages(async () => {
      await page.context().setOffline(true);
      proxy.cut();
      log('network down');
      await statusIs(page, 'offline').or(statusIs(page, 'connecting')).first().waitFor();
      await waitFooter(peer, 0, 'success', '$0.0123');
      if (await footers(page).count()) throw new Error('the offline page saw the run end');
      log(`offline page missed the end; it shows ${(await records(page)).length} records`);
      proxy.restore();
      await page.context().setOffline(false);
      log('network up');
      await waitConnected(page, RUN_TIMEOUT);
    });
    await waitFooter(page, 0, 'success', '$0.0123');

    const mine = await records(page);
    const theirs = await records(peer);
    assertUniqueSeqs(mine, 'page that went offline');
    assertUniqueSeqs(theirs, 'page that stayed online');
    assertContiguous(
      mine.map(([seq]) => seq),
      'page that went offline',
    );
    const show = (recs) => JSON.stringify([...recs].sort((a, b) => a[0] - b[0]));
    if (show(mine) !== show(theirs)) {
      throw new Error(
        `records differ after the reconnect:\n offline page ${show(mine)}\n online page  ${show(theirs)}`,
      );
    }
    for (let i = 1; i <= PARTS; i += 1) {
      const holders = mine.filter(([, text]) => text.includes(`part ${i}/${PARTS}`));
      if (!holders.length) throw new Error(`"part ${i}/${PARTS}" is missing`);
    }
    log(`every one of ${mine.length} records exactly once, as on the online page`);
  } finally {
    proxy.close();
  }
});

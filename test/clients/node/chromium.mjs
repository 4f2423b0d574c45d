// The browser client of the wsegress client matrix (test/clients/run):
// Debian's Chromium, headless, driven by playwright-core, with the proxy
// and its credentials set at launch. A page opens the WebSocket.
//
//   PROXY_PASS=... node chromium.mjs --mode session|fail|nocache --proxy http://host:port|--pac URL \
//        --user U --prime https://host:port/prime --url ws://host:port/echo --case ID \
//        --spki BASE64
//
// What this client shows (see the README's Client set-up):
//  - Chromium skips the proxy for loopback targets unless the bypass list
//    says <-loopback> (Playwright adds it; plain Chromium needs
//    --proxy-bypass-list=<-loopback>).
//  - Chromium answers a proxy's 407 with credentials only for page loads
//    and fetches (prompt, extension or Playwright's handler); a WebSocket
//    handshake only reuses credentials already in the auth cache. So the
//    page makes a request through the proxy (--prime) before it opens the
//    WebSocket; --mode nocache shows the WebSocket failing without it.
//  - WebSockets go through a CONNECT tunnel for ws:// and wss:// alike.
//  - The wss:// target's test certificate is trusted by its SPKI hash (and
//    so is an HTTPS proxy's, when it uses the same key).
//  - --pac URL: the proxy comes from a PAC file (--proxy-pac-url), which
//    may name an HTTPS proxy. Playwright answers a proxy's 407 only with
//    the credentials of its launch `proxy` option, which also adds
//    --proxy-server (which would win over the PAC) and a bypass list; so
//    the launch keeps `proxy` for the credentials and drops those two
//    flags with ignoreDefaultArgs. Chromium never asks a PAC file about
//    localhost or loopback IPs (its implicit bypass rules, which the
//    bypass list cannot undo for a PAC), so --url must use another name
//    for the target.
// The page itself is served by Playwright at the WebSocket's origin (so
// the proxy only ever sees the priming request and the WebSocket), with a
// cookie: the one custom header a page can add to a handshake.
// Prints one line per step: "ok STEP detail" or "fail STEP reason".
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    mode: { type: 'string', default: 'session' },
    proxy: { type: 'string' },
    pac: { type: 'string', default: '' },
    user: { type: 'string' },
    prime: { type: 'string' },
    url: { type: 'string' },
    case: { type: 'string' },
    spki: { type: 'string', default: '' },
    timeout: { type: 'string', default: '60' },
  },
});
for (const k of ['user', 'prime', 'url', 'case']) {
  if (!opt[k]) {
    console.error(`chromium: --${k} is required`);
    process.exit(2);
  }
}
if (!opt.proxy === !opt.pac) {
  console.error('chromium: give one of --proxy and --pac');
  process.exit(2);
}
const password = process.env.PROXY_PASS ?? '';
let failed = false;
const ok = (step, detail) => console.log(`ok ${step} ${detail}`);
const fail = (step, detail) => {
  failed = true;
  console.log(`fail ${step} ${String(detail).replace(/\s+/g, ' ')}`);
};

// The launch flags that work on these machines (no sandbox as root, no
// GPU, no QUIC, and none of Chromium's own background traffic).
// Playwright adds a fresh --user-data-dir of its own.
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const timer = setTimeout(() => {
  fail('timeout', `no result within ${opt.timeout}s`);
  process.exit(1);
}, Number(opt.timeout) * 1000);

const consoleLines = [];
let browser;
try {
  const args = [...FLAGS, ...(opt.spki ? [`--ignore-certificate-errors-spki-list=${opt.spki}`] : [])];
  let proxy = { server: opt.proxy, username: opt.user, password, bypass: '<-loopback>' };
  let ignoreDefaultArgs;
  if (opt.pac) {
    // Only the credentials of `proxy` are used; its flags are dropped.
    proxy = { server: 'http://pac.invalid:1', username: opt.user, password };
    ignoreDefaultArgs = ['--proxy-server=http://pac.invalid:1', '--proxy-bypass-list=<-loopback>'];
    args.push(`--proxy-pac-url=${opt.pac}`);
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
    proxy,
    ignoreDefaultArgs,
  });
  const context = await browser.newContext();
  const target = new URL(opt.url);
  const origin = `${target.protocol === 'wss:' ? 'https:' : 'http:'}//${target.host}`;
  await context.addCookies([{ name: 'wsegress-test', value: opt.case, domain: target.hostname, path: '/' }]);
  const page = await context.newPage();
  page.on('console', (m) => consoleLines.push(m.text()));
  await page.route(`${origin}/`, (route) => route.fulfill({
    contentType: 'text/html', body: '<!doctype html><title>wsegress matrix</title>',
  }));
  await page.goto(`${origin}/`);
  const sep = opt.url.includes('?') ? '&' : '?';
  const wsURL = `${opt.url}${sep}case=${opt.case}`;

  // Any request through the proxy puts the credentials into the auth
  // cache; the WebSocket handshake then sends them up front.
  let primeErr = null;
  if (opt.mode !== 'nocache') {
    primeErr = await page.evaluate(async (u) => {
      try {
        await fetch(u, { mode: 'no-cors', cache: 'no-store' });
        return null;
      } catch (err) {
        return String(err);
      }
    }, opt.prime);
  }
  if (opt.mode === 'session') {
    if (primeErr) fail('connect', `priming request through the proxy: ${primeErr}`);
    else await session(page, wsURL);
  } else {
    await mustFail(page, wsURL, primeErr);
  }
} catch (err) {
  fail('error', err.stack || err);
} finally {
  clearTimeout(timer);
  await browser?.close().catch(() => {});
}
process.exit(failed ? 1 : 0);

async function session(page, wsURL) {
  const steps = await page.evaluate(async ({ url, caseID }) => {
    const out = [];
    const ws = new WebSocket(url, ['wsegress-echo', 'chromium.v1']);
    ws.binaryType = 'arraybuffer';
    const queue = [];
    const waiters = [];
    const push = (ev) => (waiters.length ? waiters.shift()(ev) : queue.push(ev));
    ws.onopen = () => push({ kind: 'open' });
    ws.onmessage = (e) => push({ kind: 'message', data: e.data });
    ws.onerror = () => push({ kind: 'error' });
    ws.onclose = (e) => push({ kind: 'close', code: e.code, reason: e.reason, clean: e.wasClean });
    const next = () => queue.length ? Promise.resolve(queue.shift())
      : new Promise((resolve) => {
        waiters.push(resolve);
        setTimeout(() => resolve({ kind: 'timeout' }), 20000);
      });
    const describe = (ev) => `${ev.kind}${ev.code !== undefined ? ' ' + ev.code : ''}`;

    let ev = await next();
    if (ev.kind !== 'open') return [['fail', 'connect', `WebSocket ${describe(ev)}`]];
    if (ws.protocol !== 'wsegress-echo') return [['fail', 'connect', `subprotocol "${ws.protocol}"`]];

    const text = `hello from chromium ${caseID}`;
    ws.send(text);
    ev = await next();
    if (ev.kind !== 'message' || ev.data !== text) return [['fail', 'text-echo', `got ${describe(ev)}`]];
    out.push(['ok', 'text-echo', JSON.stringify(text)]);

    const bin = new Uint8Array(1 << 20);
    for (let i = 0; i < bin.length; i += 65536) crypto.getRandomValues(bin.subarray(i, i + 65536));
    ws.send(bin);
    ev = await next();
    const got = ev.kind === 'message' && ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : null;
    if (!got || got.length !== bin.length || !got.every((b, i) => b === bin[i])) {
      return [...out, ['fail', 'binary-1mib', `got ${describe(ev)} of ${got ? got.length : 0} bytes`]];
    }
    out.push(['ok', 'binary-1mib', `${bin.length} bytes byte-exact`]);

    // Scripts cannot ping; the target pings and records the browser's pong.
    ws.send('wsegress:ping-me');
    ev = await next();
    if (ev.kind !== 'message' || ev.data !== 'wsegress:ping-me') {
      return [...out, ['fail', 'ping-pong', `got ${describe(ev)}`]];
    }
    out.push(['ok', 'ping-pong', 'server-initiated (the page API has no ping; the target records the pong)']);

    ws.close(1000, 'bye');
    ev = await next();
    if (ev.kind !== 'close' || ev.code !== 1000 || !ev.clean) {
      return [...out, ['fail', 'close-1000', `got ${describe(ev)}`]];
    }
    out.push(['ok', 'close-1000', `client got close ${ev.code} "${ev.reason}" (wasClean)`]);
    return out;
  }, { url: wsURL, caseID: opt.case });
  for (const [kind, step, detail] of steps) (kind === 'ok' ? ok : fail)(step, detail);
}

async function mustFail(page, wsURL, primeErr) {
  const result = await page.evaluate(async (url) => new Promise((resolve) => {
    const ws = new WebSocket(url, ['wsegress-echo']);
    ws.onopen = () => { ws.close(); resolve({ opened: true }); };
    ws.onclose = (e) => resolve({ opened: false, code: e.code });
    setTimeout(() => resolve({ opened: false, code: 'timeout' }), 20000);
  }), wsURL).catch((err) => ({ opened: false, code: `evaluate failed: ${err.message.split('\n')[0]}` }));
  if (result.opened) return fail('dial-fails', 'handshake succeeded; want a refusal');
  // Scripts never see why a WebSocket failed; the console does.
  const why = consoleLines.filter((l) => l.includes('WebSocket')).join(' | ');
  const status = /Proxy authentication failed/.test(why) ? '407' : 'unknown';
  ok('dial-fails', `status=${status} close=${result.code} err="${why}" prime="${opt.mode === 'nocache' ? 'skipped' : primeErr ?? 'fetch resolved'}"`);
}

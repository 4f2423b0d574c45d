// The Node client of the wsegress client matrix (test/clients/run): the `ws`
// package with a proxy agent, as Node apps use it.
//
//   node wsclient.mjs --agent connect|absolute --mode session|fail \
//        --url ws://host:port/echo --case ID --proxy http://user:pass@host:port
//
// --agent connect uses https-proxy-agent: a CONNECT tunnel for ws:// and
// wss:// alike. --agent absolute uses http-proxy-agent: ws:// goes to the
// proxy as an absolute-form `GET http://host:port/path` with Upgrade.
// The test CA for wss:// comes from NODE_EXTRA_CA_CERTS, as in production.
// Prints one line per step: "ok STEP detail", "fail STEP reason".
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { HttpProxyAgent } from 'http-proxy-agent';

const { values: opt } = parseArgs({
  options: {
    agent: { type: 'string', default: 'connect' },
    mode: { type: 'string', default: 'session' },
    url: { type: 'string' },
    case: { type: 'string' },
    proxy: { type: 'string' },
    timeout: { type: 'string', default: '30' },
  },
});
if (!opt.url || !opt.case || !opt.proxy) {
  console.error('wsclient: --url, --case and --proxy are required');
  process.exit(2);
}
const client = opt.agent === 'absolute' ? 'node-ws-absolute' : 'node-ws-connect';
let failed = false;
const ok = (step, detail) => console.log(`ok ${step} ${detail}`);
const fail = (step, detail) => {
  failed = true;
  console.log(`fail ${step} ${String(detail).replace(/\s+/g, ' ')}`);
};

// Bound the whole run: a hung proxy must fail the case, not the matrix.
const timer = setTimeout(() => {
  fail('timeout', `no result within ${opt.timeout}s`);
  process.exit(1);
}, Number(opt.timeout) * 1000);

// agentFor is the whole proxy set-up a Node app needs. Credentials go in
// the proxy URL; both agents send them as Proxy-Authorization up front.
function agentFor(kind, proxyURL) {
  return kind === 'absolute' ? new HttpProxyAgent(proxyURL) : new HttpsProxyAgent(proxyURL);
}

function open() {
  const sep = opt.url.includes('?') ? '&' : '?';
  return new WebSocket(`${opt.url}${sep}case=${opt.case}`, ['wsegress-echo', `${client}.v1`], {
    agent: agentFor(opt.agent, opt.proxy),
    headers: { 'X-Wsegress-Test': `${client}/${opt.case}` },
    origin: `http://${client}.origin.test`,
    handshakeTimeout: 15000,
    // perMessageDeflate stays on (the default): it sends Sec-WebSocket-Extensions.
  });
}

// next resolves with the next message, pong or close event.
function events(ws) {
  const queue = [];
  const waiters = [];
  const push = (ev) => (waiters.length ? waiters.shift()(ev) : queue.push(ev));
  ws.on('message', (data, isBinary) => push({ kind: 'message', data, isBinary }));
  ws.on('pong', (data) => push({ kind: 'pong', data }));
  ws.on('close', (code, reason) => push({ kind: 'close', code, reason: reason.toString() }));
  ws.on('error', (err) => push({ kind: 'error', err }));
  return () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r)));
}

async function session() {
  const ws = open();
  const next = events(ws);
  const opened = await new Promise((resolve) => {
    ws.once('open', () => resolve(null));
    ws.once('unexpected-response', (_req, res) => resolve(new Error(`handshake answered ${res.statusCode}`)));
    ws.once('error', (err) => resolve(err));
  });
  if (opened) return fail('connect', opened.message);
  if (ws.protocol !== 'wsegress-echo') return fail('connect', `subprotocol "${ws.protocol}"; want wsegress-echo`);

  const text = `hello from ${client} ${opt.case}`;
  ws.send(text);
  let ev = await next();
  if (ev.kind !== 'message' || ev.isBinary || ev.data.toString() !== text) {
    return fail('text-echo', `got ${ev.kind} ${ev.data ?? ev.err ?? ''}`);
  }
  ok('text-echo', JSON.stringify(text));

  const bin = randomBytes(1 << 20);
  ws.send(bin, { binary: true });
  ev = await next();
  if (ev.kind !== 'message' || !ev.isBinary || !Buffer.from(ev.data).equals(bin)) {
    return fail('binary-1mib', `got ${ev.kind} of ${ev.data?.length ?? 0} bytes`);
  }
  ok('binary-1mib', `${bin.length} bytes byte-exact`);

  const ping = `ping-${opt.case}`;
  ws.ping(ping);
  ev = await next();
  if (ev.kind !== 'pong' || ev.data.toString() !== ping) {
    return fail('ping-pong', `got ${ev.kind} ${ev.data ?? ''}; want pong ${ping}`);
  }
  ok('ping-pong', `pong "${ev.data}"`);

  ws.close(1000, 'bye');
  ev = await next();
  if (ev.kind !== 'close' || ev.code !== 1000) {
    return fail('close-1000', `got ${ev.kind} ${ev.code ?? ev.err}`);
  }
  ok('close-1000', `client got close ${ev.code} "${ev.reason}"`);
}

async function mustFail() {
  const ws = open();
  const outcome = await new Promise((resolve) => {
    ws.once('open', () => resolve({ opened: true }));
    // A refused CONNECT (https-proxy-agent replays the proxy's response) and
    // a refused absolute-form GET both surface as the handshake response.
    ws.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode }));
    ws.once('error', (err) => resolve({ err }));
  });
  if (outcome.opened) {
    ws.terminate();
    return fail('dial-fails', 'handshake succeeded; want a refusal');
  }
  const m = outcome.err ? /\b([45]\d\d)\b/.exec(outcome.err.message) : null;
  const status = outcome.status ?? (m ? m[1] : 'unknown');
  ok('dial-fails', `status=${status} err="${outcome.err ? outcome.err.message : `unexpected-response ${status}`}"`);
}

try {
  await (opt.mode === 'fail' ? mustFail() : session());
} catch (err) {
  fail('error', err.stack || err);
}
clearTimeout(timer);
process.exit(failed ? 1 : 0);

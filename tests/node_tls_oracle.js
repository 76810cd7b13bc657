// What Node (Harper's runtime) does with a certificate set: the truth for
// tests/test_node_differential.py.
//
// stdin: one JSON array of cases {id, cert, key, ca} (base64 of the three files' bytes).
// stdout: one JSON array of {id, ok, stage, code, message}:
//   stage "context": tls.createSecureContext({cert, key, ca}) threw (code/message: Node's);
//   stage "handshake": a loopback mutual-TLS handshake failed, both sides using the set
//     (server requestCert + rejectUnauthorized, client checks the server against `ca`,
//     no host name check: Harper peers look certificates up by name themselves);
//   ok true: both sides authorized each other.
// Many cases run in one process, a few at a time, so hundreds take seconds.
'use strict';
const tls = require('tls');

const CONCURRENCY = 8;
const TIMEOUT_MS = 5000;

function contextError(opts) {
  try {
    tls.createSecureContext(opts);
    return null;
  } catch (err) {
    return { code: err.code || 'ERROR', message: String(err.message) };
  }
}

function handshake(opts) {
  return new Promise((resolve) => {
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      server.close();
      resolve(result);
    };
    const timer = setTimeout(() => done({ code: 'TIMEOUT', message: 'handshake timed out' }), TIMEOUT_MS);
    const server = tls.createServer({ ...opts, requestCert: true, rejectUnauthorized: true }, (sock) => {
      sock.on('error', () => {});
      sock.end();
    });
    server.on('tlsClientError', (err) => done({ code: err.code || 'SERVER_TLS_ERROR', message: String(err.message) }));
    server.on('error', (err) => done({ code: err.code || 'SERVER_ERROR', message: String(err.message) }));
    server.listen(0, '127.0.0.1', () => {
      const client = tls.connect({
        ...opts,
        host: '127.0.0.1',
        port: server.address().port,
        rejectUnauthorized: true,
        checkServerIdentity: () => undefined,
      });
      client.on('secureConnect', () => {
        client.end();
        // The server may still refuse the client's certificate after the client is happy
        // (TLS 1.3 client authentication is checked after the client's Finished).
        setTimeout(() => done(null), 30);
      });
      client.on('error', (err) => done({ code: err.code || 'CLIENT_ERROR', message: String(err.message) }));
    });
  });
}

async function run(c) {
  const opts = {
    cert: Buffer.from(c.cert, 'base64'),
    key: Buffer.from(c.key, 'base64'),
    ca: Buffer.from(c.ca, 'base64'),
  };
  const err = contextError(opts);
  if (err) return { id: c.id, ok: false, stage: 'context', ...err };
  const hs = await handshake(opts);
  if (hs) return { id: c.id, ok: false, stage: 'handshake', ...hs };
  return { id: c.id, ok: true, stage: 'handshake', code: '', message: '' };
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const cases = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const results = new Array(cases.length);
  let next = 0;
  async function worker() {
    while (next < cases.length) {
      const i = next++;
      results[i] = await run(cases[i]);
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  process.stdout.write(JSON.stringify(results));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(1);
});

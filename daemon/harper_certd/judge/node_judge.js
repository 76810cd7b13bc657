// harper-certd's judge: what Harper's own Node.js does with a certificate set.
//
// For each set: tls.createSecureContext({cert, key, ca}) as Harper builds it, then one
// mutual-TLS handshake between two in-memory TLS sockets over a duplex pair (no listening
// socket, no network), both sides using that context: the server requests the client's
// certificate, the client verifies the server's.  Neither side rejects on its own: each
// side's verdict is read after the handshake (OpenSSL's verify result, as Node's
// `authorized` / `authorizationError`), so both directions are judged in one handshake.
// Then tls.checkServerIdentity(name, serverCertificate) for every name asked.
//
// stdin: JSON {"sets": [{"id", "cert", "key", "ca" (base64 of the files' bytes),
//                        "names": [host names to check], "server": bool, "client": bool}]}
//   server: the client side verifies the server's certificate (serverAuth);
//   client: the server side requests and verifies the client's certificate (clientAuth).
// stdout: one line of JSON {"node": process.version, "openssl": process.versions.openssl,
//   "judged": [first, last] (this clock's seconds since the epoch, before the first
//   handshake and after the last: the instants OpenSSL judged validity at lie between),
//   "results": [{"id", "ok", "stage", "code", "message", "sides": {...}, "names": {...}}]}
//   stage "context": createSecureContext threw; "handshake": the handshake failed;
//   "server"/"client": that side's verification refused; "name": a name check failed;
//   "" when ok.  code/message: Node's error code and OpenSSL's reason.
'use strict';
const fs = require('fs');
const tls = require('tls');
const { Duplex } = require('stream');

const TIMEOUT_MS = 10000;

function duplexPair() {
  const ends = [];
  for (let i = 0; i < 2; i++) {
    ends.push(new Duplex({
      read() {},
      write(chunk, encoding, callback) {
        ends[1 - i].push(chunk);
        callback();
      },
      final(callback) {
        ends[1 - i].push(null);
        callback();
      },
    }));
  }
  return ends;
}

function reason(err) {
  if (!err) return { code: '', message: '' };
  return { code: String(err.code || 'ERROR'), message: String(err.message || err) };
}

function verifyReason(socket) {
  // With rejectUnauthorized false Node keeps only the code; the handle has the message.
  try {
    const err = socket._handle && socket._handle.verifyError();
    if (err) return reason(err);
  } catch (e) { /* fall back to the code */ }
  return { code: String(socket.authorizationError || 'UNAUTHORIZED'), message: String(socket.authorizationError || '') };
}

function judge(set) {
  const opts = {
    cert: Buffer.from(set.cert, 'base64'),
    key: Buffer.from(set.key, 'base64'),
    ca: Buffer.from(set.ca, 'base64'),
  };
  let context;
  try {
    context = tls.createSecureContext(opts);
  } catch (err) {
    return Promise.resolve({ id: set.id, ok: false, stage: 'context', ...reason(err), sides: {}, names: {} });
  }
  return new Promise((resolve) => {
    const sides = {};
    let serverCert = null;
    let settled = false;
    let pending = 2;
    const finish = (failure) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clientSocket.destroy();
      const names = {};
      for (const name of set.names || []) {
        if (!serverCert) { names[name] = 'no server certificate'; continue; }
        const err = tls.checkServerIdentity(name, serverCert);
        names[name] = err ? String(err.message) : '';
      }
      if (failure) {
        resolve({ id: set.id, ok: false, stage: 'handshake', ...failure, sides, names });
        return;
      }
      for (const side of ['server', 'client']) {
        if (set[side] && !sides[side].ok) {
          resolve({ id: set.id, ok: false, stage: side, code: sides[side].code, message: sides[side].message, sides, names });
          return;
        }
      }
      const bad = Object.entries(names).find(([, why]) => why);
      if (bad) {
        resolve({ id: set.id, ok: false, stage: 'name', code: 'ERR_TLS_CERT_ALTNAME_INVALID', message: bad[1], sides, names });
        return;
      }
      resolve({ id: set.id, ok: true, stage: '', code: '', message: '', sides, names });
    };
    const timer = setTimeout(() => finish({ code: 'TIMEOUT', message: 'handshake timed out' }), TIMEOUT_MS);
    const [serverEnd, clientEnd] = duplexPair();
    // tls.Server builds its own context from the options (it ignores `secureContext`).
    const server = tls.createServer({ ...opts, requestCert: Boolean(set.client), rejectUnauthorized: false });
    server.on('secureConnection', (socket) => {
      // The client's certificate, verified as a client (OpenSSL's ssl_client purpose).
      sides.client = socket.authorized ? { ok: true, code: '', message: '' } : { ok: false, ...verifyReason(socket) };
      socket.on('error', () => {});
      socket.end();
      if (--pending === 0) finish(null);
    });
    server.on('tlsClientError', (err) => finish(reason(err)));
    server.emit('connection', serverEnd);
    const clientSocket = tls.connect({
      socket: clientEnd,
      secureContext: context,
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    clientSocket.on('secureConnect', () => {
      // The server's certificate, verified as a server (OpenSSL's ssl_server purpose).
      sides.server = clientSocket.authorized ? { ok: true, code: '', message: '' } : { ok: false, ...verifyReason(clientSocket) };
      serverCert = clientSocket.getPeerCertificate(true);
      if (--pending === 0) finish(null);
    });
    clientSocket.on('data', () => {});
    clientSocket.on('error', (err) => finish(reason(err)));
  });
}

async function readStdin() {
  // fd 0 read to its end at once: the harper-certd side writes the request into a blocking
  // pipe and closes it; the stream's for-await costs Node 3-5 ms more (Node 20, --jitless).
  try {
    return fs.readFileSync(0);
  } catch (err) {
    if (err.code !== 'EAGAIN') throw err;  // a non-blocking stdin: read it as a stream
  }
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function main() {
  let request;
  try {
    request = JSON.parse((await readStdin()).toString('utf8'));
  } catch (err) {
    // V8's message can quote the input ("Unexpected token 'x', \"...\" is not valid JSON"),
    // and the input holds the key: never echo it to stderr, which the caller may show.
    throw new Error('the request is not valid JSON');
  }
  const results = [];
  const first = Date.now() / 1000;
  for (const set of request.sets) results.push(await judge(set));
  const judged = [first, Date.now() / 1000];
  // One line: the reader uses it as soon as its newline arrives.  Then exit once it is
  // written, without waiting for the event loop to close the handshakes' handles (the
  // caller reaps this process before its own exit: 2-7 ms saved there).
  const line = JSON.stringify({
    node: process.version, openssl: process.versions.openssl, judged, results,
  }) + '\n';
  process.stdout.write(line, () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(1);
});

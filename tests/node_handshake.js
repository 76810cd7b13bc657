// A Node.js mutual-TLS handshake per set, as two Harper peers make it (both sides with the
// same certificate, key and CA file; peer certificates required and verified; no host name
// check, which the validator's callers ask for separately).
// stdin: JSON list of {"id", "cert", "key", "ca"} (file paths).
// stdout: one JSON line per set: {"id", "ok", "error"} (error: Node's code or message).
'use strict';
const fs = require('fs');
const tls = require('tls');

function handshake(set) {
  return new Promise((resolve) => {
    let options;
    try {
      options = {
        cert: fs.readFileSync(set.cert),
        key: fs.readFileSync(set.key),
        ca: fs.readFileSync(set.ca),
      };
      tls.createSecureContext(options);
    } catch (err) {
      resolve({ id: set.id, ok: false, error: `context: ${err.code || err.message}` });
      return;
    }
    let done = false;
    let serverOk = false;
    const finish = (ok, error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      server.close();
      resolve({ id: set.id, ok, error });
    };
    const server = tls.createServer({ ...options, requestCert: true, rejectUnauthorized: true });
    server.on('secureConnection', (socket) => {
      serverOk = true;
      socket.end('x');
    });
    server.on('tlsClientError', (err) => finish(false, `server: ${err.code || err.message}`));
    const timer = setTimeout(() => finish(false, 'timeout'), 5000);
    server.listen(0, '127.0.0.1', () => {
      const client = tls.connect({
        ...options,
        host: '127.0.0.1',
        port: server.address().port,
        checkServerIdentity: () => undefined,
        rejectUnauthorized: true,
      });
      client.on('data', () => {
        client.end();
        // The server's secureConnection precedes its first write.
        finish(serverOk, serverOk ? '' : 'server did not accept');
      });
      client.on('error', (err) => finish(false, `client: ${err.code || err.message}`));
    });
  });
}

async function main() {
  const sets = JSON.parse(fs.readFileSync(0, 'utf8'));
  for (const set of sets) {
    process.stdout.write(JSON.stringify(await handshake(set)) + '\n');
  }
}

main();

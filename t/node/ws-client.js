'use strict';
// A real WebSocket client (npm ws) for t/100-ws-protocol.t.
//
//   NODE_PATH=scripts/node/node_modules node t/node/ws-client.js URL TOKEN
//
// Offers the token as a subprotocol (new WebSocket(url, ['access_token',
// jwt]), as browsers do), then prints one JSON line per step on stdout:
//   {"event":"open","protocol":...}      after the 101
//   {"event":"message","data":...}       each message (JSON-decoded)
//   {"event":"pong","data":...}          the answer to the ping sent after
//                                        the first message
//   {"event":"close","code":...,"reason":...}  after close(1000) at the pong
// and {"event":"error"|"unexpected-response"|"timeout",...} when it goes
// wrong.  Exits 0 after the close, non-zero otherwise; 20 s at most.

const WebSocket = require('ws');

const [url, token] = process.argv.slice(2);
if (!url || !token) {
    process.stderr.write('usage: ws-client.js URL TOKEN\n');
    process.exit(64);
}

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const timer = setTimeout(() => {
    out({ event: 'timeout' });
    process.exit(2);
}, 20000);

const ws = new WebSocket(url, ['access_token', token]);
let pinged = false;

ws.on('open', () => out({ event: 'open', protocol: ws.protocol }));

ws.on('unexpected-response', (req, res) => {
    out({ event: 'unexpected-response', status: res.statusCode });
    process.exit(1);
});

ws.on('error', (e) => out({ event: 'error', message: String(e && e.message) }));

ws.on('message', (data, isBinary) => {
    let m = data.toString();
    try { m = JSON.parse(m); } catch (e) { /* left as text */ }
    out({ event: 'message', data: m, binary: isBinary });
    if (!pinged) {
        pinged = true;
        ws.ping('fleet-ping');
    }
});

ws.on('pong', (data) => {
    out({ event: 'pong', data: data.toString() });
    ws.close(1000, 'bye');
});

ws.on('close', (code, reason) => {
    out({ event: 'close', code, reason: reason.toString() });
    clearTimeout(timer);
    process.exit(0);
});

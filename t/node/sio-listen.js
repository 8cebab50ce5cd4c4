'use strict';
// Real, unmodified socket.io-client sockets that report every event they
// receive, driven by a test (t/120-users.t): one JSON command per line on
// stdin, one JSON line per happening on stdout.
//
//   NODE_PATH=scripts/node/node_modules node t/node/sio-listen.js
//
// Commands:
//   {"op":"open","id":"alice","url":"http://127.0.0.1:PORT","token":"...",
//    "opts":{"transports":["websocket"]}}
//       io(url, {forceNew: true, reconnection: false, auth: {token}, ...opts})
//   {"op":"close","id":"alice"}
//   {"op":"exit"}
//
// Output lines, each with "id" and "t":
//   {"t":"connect"}  {"t":"connect_error","message":...}
//   {"t":"disconnect","reason":...}
//   {"t":"event","event":...,"data":...}   (the first argument)
//   {"t":"error","message":...}            a command that went wrong

const { io } = require('socket.io-client');
const readline = require('readline');

const sockets = {};

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function open(cmd) {
    const id = cmd.id;
    const opts = Object.assign({ forceNew: true, reconnection: false },
                               cmd.opts || {});
    if (cmd.token !== undefined && cmd.token !== null) opts.auth = { token: cmd.token };
    const s = io(cmd.url, opts);
    sockets[id] = s;
    s.on('connect', () => out({ id, t: 'connect' }));
    s.on('connect_error', (e) => out({ id, t: 'connect_error', message: e && e.message }));
    s.on('disconnect', (reason) => out({ id, t: 'disconnect', reason }));
    s.onAny((event, data) => out({ id, t: 'event', event, data }));
}

function handle(cmd) {
    if (cmd.op === 'exit') {
        for (const k of Object.keys(sockets)) sockets[k].disconnect();
        process.exit(0);
    }
    if (cmd.op === 'open') return open(cmd);
    const s = sockets[cmd.id];
    if (!s) return out({ id: cmd.id, t: 'error', message: 'no socket ' + cmd.id });
    if (cmd.op === 'close') return s.disconnect();
    return out({ id: cmd.id, t: 'error', message: 'unknown op ' + cmd.op });
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (!line.trim()) return undefined;
    let cmd;
    try { cmd = JSON.parse(line); } catch (e) {
        return out({ t: 'error', message: 'bad command: ' + line });
    }
    try { return handle(cmd); } catch (e) {
        return out({ id: cmd.id, t: 'error', message: String(e && e.stack) });
    }
}).on('close', () => process.exit(0));

// never outlive the test
setTimeout(() => process.exit(3), 120000).unref();

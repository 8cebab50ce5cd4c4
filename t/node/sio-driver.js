'use strict';
// Many real socket.io-client sockets in one process, driven by
// t/110-socketio.t: one JSON command per line on stdin, one JSON line per
// happening on stdout.
//
//   NODE_PATH=scripts/node/node_modules node t/node/sio-driver.js
//
// Commands:
//   {"op":"open","id":"a1","url":"http://127.0.0.1:PORT","token":"...",
//    "opts":{"transports":["websocket"]},"count":["big"],"raw":["meter_values_updated"]}
//       io(url, {forceNew: true, auth: {token}, ...opts}); an absent token
//       means no auth at all.  Events named in "count" are only counted
//       (see "report"); events named in "raw" are also printed as the
//       Engine.IO text they arrived in.  "trace": true prints every
//       Engine.IO packet in and out ({"t":"trace",...}), for debugging.
//   {"op":"emit","id":"a1","event":"join_room","data":{...},"tag":"t1"}
//       emit with an acknowledgement callback (10 s timeout) when "tag" is
//       given, without one otherwise
//   {"op":"burst","id":"a1","event":"...","data":{...},"n":40,"tag":"b"}
//       n emits in the same tick (acks tagged "b.0" ... "b.39" when tagged)
//   {"op":"report","id":"a1"}      counts of the "count" events
//   {"op":"close","id":"a1"}       socket.disconnect()
//   {"op":"exit"}
//
// Output lines, each with "id" and "t" (what), "ms" (Date.now()) and
// "tr" (the Engine.IO transport in use, when there is one):
//   {"t":"open","sid":"<engine.io sid>"}      the Engine.IO session is open
//   {"t":"connect","sid":"<engine.io sid>","sioid":"<socket id>"}
//   {"t":"upgrade","to":"websocket"}
//   {"t":"connect_error","message":...,"data":...}
//   {"t":"disconnect","reason":...}
//   {"t":"reconnect_attempt","n":...}
//   {"t":"event","event":...,"data":...}        (first argument only)
//   {"t":"raw","event":...,"text":"42[...]"}
//   {"t":"ack","tag":...,"data":...} or {"t":"ack","tag":...,"error":"timeout"}
//   {"t":"report","counts":{...},"inorder":{...},"last":{...}}
//   {"t":"error","message":...}                 a command that went wrong

const { io } = require('socket.io-client');
const readline = require('readline');

const sockets = {};

const out = (o) => {
    o.ms = Date.now();
    process.stdout.write(JSON.stringify(o) + '\n');
};

const trOf = (s) => {
    try { return s.io.engine.transport.name; } catch (e) { return undefined; }
};

function open(cmd) {
    const id = cmd.id;
    const opts = Object.assign({ forceNew: true }, cmd.opts || {});
    if (cmd.token !== undefined && cmd.token !== null) opts.auth = { token: cmd.token };
    const s = io(cmd.url, opts);
    const st = { s, count: new Set(cmd.count || []), raw: new Set(cmd.raw || []),
                 counts: {}, inorder: {}, last: {} };
    sockets[id] = st;

    // the engine of each (re)connection, as soon as it is open (its
    // upgrade may well finish before the Socket.IO CONNECT is answered)
    s.io.on('open', () => {
        const eng = s.io.engine;
        out({ id, t: 'open', tr: trOf(s), sid: eng.id });
        eng.on('upgrade', (t) => out({ id, t: 'upgrade', to: t.name, tr: trOf(s) }));
        if (cmd.trace) {
            eng.on('packet', (p) => out({ id, t: 'trace', dir: 'in', tr: trOf(s), type: p.type, data: p.data }));
            eng.on('packetCreate', (p) => out({ id, t: 'trace', dir: 'out', tr: trOf(s), type: p.type, data: p.data }));
        }
        if (st.raw.size) {
            eng.on('packet', (p) => {
                if (p.type !== 'message' || typeof p.data !== 'string') return;
                const m = /^2\["([^"]+)"/.exec(p.data);
                if (m && st.raw.has(m[1])) {
                    out({ id, t: 'raw', tr: trOf(s), event: m[1], text: '4' + p.data });
                }
            });
        }
    });
    s.on('connect', () => out({ id, t: 'connect', tr: trOf(s), sid: s.io.engine.id, sioid: s.id }));
    s.on('connect_error', (e) => out({ id, t: 'connect_error', message: e && e.message,
                                       data: e && e.data, active: s.active }));
    s.on('disconnect', (reason) => out({ id, t: 'disconnect', reason }));
    s.io.on('reconnect_attempt', (n) => out({ id, t: 'reconnect_attempt', n }));
    s.onAny((event, data) => {
        if (st.count.has(event)) {
            const i = data && data.i;
            const n = (st.counts[event] || 0) + 1;
            st.counts[event] = n;
            if (st.inorder[event] === undefined) st.inorder[event] = true;
            if (i !== n) st.inorder[event] = false;
            st.last[event] = i;
            return;
        }
        out({ id, t: 'event', tr: trOf(s), event, data });
    });
}

function emit(st, id, cmd, tag) {
    if (tag === undefined || tag === null) {
        st.s.emit(cmd.event, cmd.data);
        return;
    }
    st.s.timeout(10000).emit(cmd.event, cmd.data, (err, resp) => {
        if (err) out({ id, t: 'ack', tag, error: 'timeout' });
        else out({ id, t: 'ack', tag, tr: trOf(st.s), data: resp });
    });
}

function handle(cmd) {
    if (cmd.op === 'exit') {
        for (const k of Object.keys(sockets)) sockets[k].s.disconnect();
        process.exit(0);
    }
    if (cmd.op === 'open') return open(cmd);
    const st = sockets[cmd.id];
    if (!st) return out({ id: cmd.id, t: 'error', message: 'no socket ' + cmd.id });
    switch (cmd.op) {
    case 'emit':
        return emit(st, cmd.id, cmd, cmd.tag);
    case 'burst':
        for (let i = 0; i < cmd.n; i++) {
            emit(st, cmd.id, cmd, cmd.tag === undefined ? undefined : cmd.tag + '.' + i);
        }
        return undefined;
    case 'report':
        return out({ id: cmd.id, t: 'report', counts: st.counts, inorder: st.inorder,
                     last: st.last, connected: st.s.connected });
    case 'close':
        st.s.disconnect();
        return undefined;
    default:
        return out({ id: cmd.id, t: 'error', message: 'unknown op ' + cmd.op });
    }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (!line.trim()) return;
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

// The baseline of `bench/ws.pl --proto sio`: what people build today — a
// Node socket.io server fed by MQTT.  It checks the HS256 token of each
// connection (like fleetgate), answers join_room, and emits every message
// {event, data} it gets on TOPIC (MQTT_PORT 0: no MQTT) or on an HTTP
// POST /publish (the bench's publisher, answered 204) to the "dashboard"
// room as one event.  Node's cluster is not used:
// a socket.io room spread over processes needs an adapter (Redis,
// PostgreSQL), which is the comparison the numbers leave out in Node's
// favour.
//
//   node bench/sio-baseline.js PORT MQTT_PORT JWT_SECRET [TOPIC]

'use strict';

const http = require('http');
const crypto = require('crypto');
const { Server } = require('socket.io');
const mqtt = require('mqtt');

const [port, mqttPort, secret, topic = 'bench/sio'] = process.argv.slice(2);

function verify(token) {
    const parts = String(token || '').split('.');
    if (parts.length !== 3) return null;
    const sig = crypto.createHmac('sha256', secret)
        .update(parts[0] + '.' + parts[1]).digest('base64url');
    if (sig.length !== parts[2].length
        || !crypto.timingSafeEqual(Buffer.from(sig), Buffer.from(parts[2]))) {
        return null;
    }
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    if (!claims.exp || claims.exp * 1000 < Date.now()) return null;
    return claims;
}

function emit(text) {
    let m;
    try { m = JSON.parse(text); } catch (e) { return; }
    io.to('dashboard').emit(m.event || 'meter_values_updated', m.data);
}

const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/publish') return;
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => { emit(body); res.writeHead(204); res.end(); });
});
const io = new Server(server, { maxHttpBufferSize: 1e6 });

io.use((socket, next) => {
    const claims = verify(socket.handshake.auth && socket.handshake.auth.token);
    if (!claims) return next(new Error('invalid token'));
    socket.data.claims = claims;
    next();
});

io.on('connection', (socket) => {
    socket.join('user_' + socket.data.claims.sub);
    socket.on('join_room', (arg, ack) => {
        socket.join(String(arg && arg.room));
        if (typeof ack === 'function') ack({ ok: true });
    });
});

if (Number(mqttPort) > 0) {
    const client = mqtt.connect('mqtt://127.0.0.1:' + mqttPort);
    client.on('connect', () => client.subscribe(topic, { qos: 1 }));
    client.on('message', (t, payload) => emit(payload.toString()));
}

server.listen(Number(port), '127.0.0.1', () => {
    process.stdout.write('listening ' + port + '\n');
});

// The baseline of bench/sio.pl: what people build today — a Node socket.io
// server fed by MQTT.  It checks the HS256 token of each connection (like
// fleetgate), answers join_room, and emits every MQTT message it gets on
// TOPIC to the "dashboard" room as one event.  Node's cluster is not used:
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

const server = http.createServer();
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

const client = mqtt.connect('mqtt://127.0.0.1:' + mqttPort);
client.on('connect', () => client.subscribe(topic, { qos: 1 }));
client.on('message', (t, payload) => {
    let m;
    try { m = JSON.parse(payload.toString()); } catch (e) { return; }
    io.to('dashboard').emit(m.event || 'meter_values_updated', m.data);
});

server.listen(Number(port), '127.0.0.1', () => {
    process.stdout.write('listening ' + port + '\n');
});

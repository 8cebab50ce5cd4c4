// fleetgate bench helper: plays every device at once over one MQTT
// connection: each command on device/+/command is answered with a signed
// SUCCESS ACK on server/{id}/ack.  Prints "ready" once subscribed.
'use strict';
const crypto = require('crypto');
const mqtt = require('mqtt');

const [host, port, secret] = process.argv.slice(2);
const sha256 = (s) => crypto.createHash('sha256').update(s).digest('hex');
const signed = (obj) => {
  const s = JSON.stringify(obj);
  return s.slice(0, -1) + `,"sha256":"${sha256(s + secret)}"}`;
};

const c = mqtt.connect(`mqtt://${host}:${port}`, { clientId: 'bench-devices' });
let answered = 0;
c.on('connect', () => c.subscribe('device/+/command', { qos: 1 }, () => console.log('ready')));
c.on('message', (topic, payload) => {
  const id = topic.split('/')[1];
  const m = JSON.parse(payload.toString());
  c.publish(`server/${id}/ack`, signed({
    command_id: m.command_id, device_id: id, command: m.command,
    status: 'SUCCESS', timestamp: Date.now(),
  }), { qos: 1 });
  answered++;
});
process.on('SIGTERM', () => { console.log(`answered ${answered}`); process.exit(0); });

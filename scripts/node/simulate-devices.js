#!/usr/bin/env node
// fleetgate device simulator: N devices that register over signed HTTP,
// then stream state and sensor readings over MQTT (signed with the sha256
// member, SPEC 2), keep a last will on server/{id}/status, and upload
// event logs now and then.  Settings come from the environment (var/fleet.env
// of scripts/up): FLEET_HTTP_URL, FLEET_MQTT_HOST, FLEET_MQTT_PORT,
// FLEET_DEVICE_SECRET.
'use strict';

const crypto = require('crypto');
const mqtt = require('mqtt');

function usage() {
  console.log(`usage: scripts/simulate-devices [--devices N] [--interval SECONDS]
                                [--duration SECONDS] [--prefix NAME]
  --devices   how many devices (default 10)
  --interval  seconds between streaming messages of one device (default 5)
  --duration  stop after this many seconds (default 60; 0 = until Ctrl-C)
  --prefix    chip id prefix (default SIM)`);
  process.exit(0);
}

const opt = { devices: 10, interval: 5, duration: 60, prefix: 'SIM' };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (k === 'help' || k === 'h' || !(k in opt)) usage();
  opt[k] = k === 'prefix' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

const env = process.env;
for (const k of ['FLEET_HTTP_URL', 'FLEET_MQTT_HOST', 'FLEET_MQTT_PORT', 'FLEET_DEVICE_SECRET']) {
  if (!env[k]) { console.error(`${k} is not set (. var/fleet.env)`); process.exit(2); }
}
const secret = env.FLEET_DEVICE_SECRET;
const sha256 = (s) => crypto.createHash('sha256').update(s).digest('hex');

// a device serialises compactly, hashes, appends "sha256" as the last member
function signed(obj) {
  const s = JSON.stringify(obj);
  return s.slice(0, -1) + (s === '{}' ? '' : ',') + `"sha256":"${sha256(s + secret)}"}`;
}

async function post(path, obj) {
  const body = JSON.stringify(obj);
  const res = await fetch(env.FLEET_HTTP_URL + path, {
    method: 'POST', body,
    headers: { 'Content-Type': 'application/json', 'x-signature': sha256(body + secret) },
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${json.message}`);
  return json;
}

const stats = { streaming: 0, sensor: 0, uploads: 0, errors: 0 };

async function startDevice(n) {
  const chip = `${opt.prefix}${String(n).padStart(5, '0')}`;
  const mac = '24:6F:28:' + [n >> 16, (n >> 8) & 255, n & 255]
    .map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(':');
  const reg = await post('/api/v1/devices/need-register',
    { chip_id: chip, mac_address: mac, firmware_version: 'car_wash_v1.00' });
  const id = reg.data.device_id;
  await post('/api/v1/devices/sync-state', {
    topic_request: 'startup', device_id: id, device_status: 'NORMAL',
    payload: { configs: { machine: { ACTIVE: true, QR: true } } }, timestamp: Date.now(),
  });

  const client = mqtt.connect(`mqtt://${env.FLEET_MQTT_HOST}:${env.FLEET_MQTT_PORT}`, {
    clientId: `sim-${id}`, reconnectPeriod: 1000,
    will: { topic: `server/${id}/status`, payload: signed({ status: 'OFFLINE' }), qos: 1 },
  });
  client.on('error', () => { stats.errors++; });

  const started = Date.now();
  const tick = () => {
    const now = Date.now();
    client.publish(`server/${id}/streaming`, signed({
      rssi: -50 - Math.floor(Math.random() * 40), status: 'NORMAL',
      uptime: Math.floor((now - started) / 60000), timestamp: now,
    }), { qos: 1 }, (err) => { if (err) stats.errors++; else stats.streaming++; });
    client.publish(`server/${id}/sensor`, signed({
      readings: [
        { type: 'temperature', unit: 'celsius', value: Math.round((20 + Math.random() * 10) * 10) / 10, timestamp: now },
        { type: 'humidity', unit: '%', value: Math.round(40 + Math.random() * 30), timestamp: now },
      ],
    }), { qos: 1 }, (err) => { if (err) stats.errors++; else stats.sensor++; });
    if (Math.random() < 0.1) {
      post('/api/v1/device-event-logs/uploads', { device_id: id, items: [{
        coin: { 1: 5, 2: 0, 5: 0, 10: 0 }, type: 'PAYMENT', status: 'SUCCEEDED',
        timestamp: now, total_amount: 5 }] })
        .then(() => stats.uploads++, () => stats.errors++);
    }
  };
  const timer = setInterval(tick, opt.interval * 1000 * (0.9 + Math.random() * 0.2));
  tick();
  return { id, client, timer };
}

(async () => {
  const devices = [];
  for (let i = 1; i <= opt.devices; i++) devices.push(await startDevice(i));
  console.log(`${devices.length} devices online: ${devices.slice(0, 3).map((d) => d.id).join(', ')}${devices.length > 3 ? ', ...' : ''}`);
  const report = setInterval(() => console.log(JSON.stringify(stats)), 5000);
  const stop = () => {
    clearInterval(report);
    for (const d of devices) { clearInterval(d.timer); d.client.end(); }
    console.log('final', JSON.stringify(stats));
    setTimeout(() => process.exit(0), 500);
  };
  process.on('SIGINT', stop);
  if (opt.duration > 0) setTimeout(stop, opt.duration * 1000);
})().catch((e) => { console.error(e.message); process.exit(1); });

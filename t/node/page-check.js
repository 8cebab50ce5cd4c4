#!/usr/bin/env node
// Drives www/websocket-test/ in headless Chromium (playwright-core) against a
// running stack; prints one JSON line: {"ok":..., "checks":{...}, ...}.
//
//   NODE_PATH=scripts/node/node_modules node t/node/page-check.js \
//       <base-url> <email> <password> <sensor_id>
//
// Environment: CHROMIUM (default /usr/bin/chromium), PAGE_CHECK_TIMEOUT_MS
// (default 45000: the whole run; every wait is bounded by WAIT_MS too).
'use strict';

const { chromium } = require('playwright-core');

const [base, email, password, sensorArg] = process.argv.slice(2);
if (!base || !email || !password || !/^\d+$/.test(sensorArg || '')) {
    console.error('usage: page-check.js <base-url> <email> <password> <sensor_id>');
    process.exit(2);
}
const sensorId = Number(sensorArg);
const WAIT_MS = 10000;
const TOTAL_MS = Number(process.env.PAGE_CHECK_TIMEOUT_MS || 45000);
const origin = new URL(base).origin;
const started = Date.now();

const result = { ok: false, checks: {}, console_errors: [], page_errors: [],
                 foreign_requests: [], ws_urls: [], step: 'start' };
let browser = null;
let finished = false;

function done(code) {
    if (finished) { return; }
    finished = true;
    result.ms = Date.now() - started;
    process.stdout.write(JSON.stringify(result) + '\n');
    const close = browser ? browser.close().catch(() => {}) : Promise.resolve();
    close.then(() => process.exit(code));
    setTimeout(() => process.exit(code), 3000).unref();
}

setTimeout(() => {
    result.error = `page-check took longer than ${TOTAL_MS} ms (step ${result.step})`;
    done(1);
}, TOTAL_MS).unref();

function check(name, cond, detail) {
    result.checks[name] = cond ? true : (detail === undefined ? false : detail);
    if (!cond) {
        throw new Error(`check failed: ${name}` + (detail === undefined ? '' : `: ${JSON.stringify(detail)}`));
    }
}

const JWT = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/;

async function entryJson(loc) {
    return JSON.parse(await loc.locator('pre.msg-body').textContent());
}

async function main() {
    browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox'],
        headless: true,
        timeout: WAIT_MS * 2
    });
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);

    let expect401 = false;
    page.on('console', (m) => {
        if (m.type() !== 'error') { return; }
        const text = m.text();
        // the browser reports the refused sign-in we provoke below
        if (expect401 && /status of 401/.test(text)) { return; }
        result.console_errors.push(text.replace(JWT, '<jwt>'));
    });
    page.on('console', (m) => {
        if (JWT.test(m.text())) { result.token_in_console = true; }
    });
    page.on('pageerror', (e) => result.page_errors.push(String(e && e.message || e)));
    page.on('request', (req) => {
        const u = req.url();
        if (!u.startsWith(origin + '/') && !u.startsWith('data:')) {
            result.foreign_requests.push(u);
        }
    });
    page.on('websocket', (w) => result.ws_urls.push(w.url()));

    // ---- the page and its assets
    result.step = 'load';
    const res = await page.goto(base + '/websocket-test/', { waitUntil: 'load' });
    check('page_200', res && res.status() === 200, res && res.status());
    check('title', /WebSocket test/.test(await page.title()), await page.title());
    // the inline style applies (a CSP hash that no longer matches would drop it)
    const radius = await page.evaluate(() => getComputedStyle(document.getElementById('auth')).borderRadius);
    check('style_applied', radius === '8px', radius);
    for (const id of ['email', 'password', 'stream-kind', 'stream-param', 'send-sensor-id',
                      'send-value', 'send-timestamp', 'raw-text']) {
        const labelled = await page.evaluate((i) => {
            const e = document.getElementById(i);
            return !!(e && e.labels && e.labels.length && e.labels[0].textContent.trim());
        }, id);
        check(`label_${id}`, labelled);
    }
    check('stream_disabled_before_login', await page.locator('#connect').isDisabled());

    // ---- a refused sign-in shows the server's message
    result.step = 'bad-login';
    expect401 = true;
    await page.fill('#email', email);
    await page.fill('#password', password + '-wrong');
    await page.click('#login-submit');
    await page.waitForSelector('#login-status[data-state="error"]');
    const bad = await page.textContent('#login-status');
    check('bad_login_message', /invalid email or password/.test(bad), bad);
    await page.waitForSelector('#login-submit:not([disabled])');
    expect401 = false;

    // ---- sign in
    result.step = 'login';
    await page.fill('#password', password);
    await page.click('#login-submit');
    await page.waitForSelector('#login-status[data-state="ok"]');
    const who = await page.textContent('#session-user');
    check('session_user', who.includes(email), who);
    check('password_cleared', (await page.inputValue('#password')) === '');
    const storage = await page.evaluate(() => ({
        local: localStorage.length, session: sessionStorage.length, cookie: document.cookie,
        jwtInDom: /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/
            .test(document.documentElement.outerHTML)
    }));
    check('token_not_stored', storage.local === 0 && storage.session === 0
          && storage.cookie === '' && !storage.jwtInDom, storage);

    // ---- /ws/sensor-data/
    result.step = 'connect';
    await page.selectOption('#stream-kind', 'sensor-data');
    await page.click('#connect');
    await page.waitForSelector('#ws-state[data-state="open"]');
    check('stream_url', (await page.textContent('#stream-url')) === '/ws/sensor-data/');
    const opened = await page.textContent('#messages li.msg-system[data-type="open"]');
    check('subprotocol_access_token', /subprotocol access_token/.test(opened), opened);

    // ---- a reading comes back as a sensor_data_update
    result.step = 'send';
    const value = 21.75;
    await page.fill('#send-sensor-id', String(sensorId));
    await page.fill('#send-value', String(value));
    await page.fill('#send-timestamp', '');
    await page.click('#send-submit');
    const upd = page.locator(
        `#messages li.msg-in[data-type="sensor_data_update"][data-sensor-id="${sensorId}"]`).first();
    await upd.waitFor();
    const u = await entryJson(upd);
    result.update = u;
    check('update_shape', u.type === 'sensor_data_update' && u.sensor_id === sensorId
          && u.value === value && typeof u.sensor_type === 'string'
          && typeof u.device_id === 'string' && typeof u.timestamp === 'string', u);
    const first = await page.getAttribute('#messages li:first-child', 'data-type');
    check('newest_first', first === 'sensor_data_update', first);

    // ---- an unknown sensor: an error, shown distinctly; the socket stays open
    result.step = 'error';
    const missing = 999999999;
    await page.fill('#send-sensor-id', String(missing));
    await page.click('#send-submit');
    const err = page.locator('#messages li.msg-error[data-code="SENSOR_NOT_FOUND"]').first();
    await err.waitFor();
    const e = await entryJson(err);
    result.error_message = e;
    check('error_shape', e.type === 'error' && e.code === 'SENSOR_NOT_FOUND'
          && typeof e.message === 'string' && e.message.includes(String(missing)), e);
    const alert = await page.textContent('#last-error');
    check('error_alert', alert.startsWith('SENSOR_NOT_FOUND: '), alert);
    check('still_open', (await page.getAttribute('#ws-state', 'data-state')) === 'open');

    // client-side validation: nothing is sent for a bad value
    const before = await page.locator('#messages li.msg-out').count();
    await page.fill('#send-sensor-id', String(sensorId));
    await page.fill('#send-value', 'warm');
    await page.click('#send-submit');
    check('client_validation', /number/.test(await page.textContent('#send-status'))
          && (await page.locator('#messages li.msg-out').count()) === before);

    // ---- /ws/sensor/{id}/: the URL is built from the parameter
    result.step = 'sensor-stream';
    await page.selectOption('#stream-kind', 'sensor');
    await page.fill('#stream-param', String(sensorId));
    await page.click('#connect');
    await page.waitForSelector('#ws-state[data-state="open"]');
    check('sensor_stream_url', (await page.textContent('#stream-url')) === `/ws/sensor/${sensorId}/`);
    await page.click('#clear-log');
    await page.fill('#send-value', '-3.5');
    await page.fill('#send-timestamp', '2025-09-11T15:30:00Z');
    await page.click('#send-submit');
    const upd2 = page.locator(
        `#messages li.msg-in[data-type="sensor_data_update"][data-sensor-id="${sensorId}"]`).first();
    await upd2.waitFor();
    const u2 = await entryJson(upd2);
    check('sensor_stream_update', u2.value === -3.5 && /^2025-09-11T15:30:00/.test(u2.timestamp), u2);

    // ---- a mocked stream (never reaches the server): the log keeps at most
    // data-max entries, newest first; a camera frame is shown as an image
    result.step = 'mock';
    const mockId = 'mock-device';
    const tinyPng = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';
    await page.routeWebSocket(`**/ws/device/${mockId}/`, (mock) => {
        for (let i = 1; i <= 250; i++) {
            mock.send(JSON.stringify({ type: 'device_status', device_id: mockId, seq: i,
                                       status: 'active', online: true }));
        }
        mock.send(JSON.stringify({ esp_hmac: 'AA:BB:CC:DD:EE:FF', image_data: tinyPng,
                                   timestamp: 1757604600000 }));
    });
    await page.selectOption('#stream-kind', 'device');
    await page.fill('#stream-param', mockId);
    await page.click('#connect');
    await page.waitForSelector('#messages li[data-type="camera_frame"]');
    const cap = await page.evaluate(() => {
        const ol = document.getElementById('messages');
        const seqs = [...ol.querySelectorAll('li[data-type="device_status"] pre')]
            .map((p) => JSON.parse(p.textContent).seq);
        return { max: Number(ol.dataset.max), n: ol.children.length, first: seqs[0],
                 last: seqs[seqs.length - 1],
                 frame: !!document.querySelector('#frames figure[data-mac="AA:BB:CC:DD:EE:FF"] img[src^="data:image/png"]'),
                 framesVisible: !document.getElementById('frames-section').hidden };
    });
    check('log_capped', cap.max === 200 && cap.n === 200 && cap.first === 250, cap);
    check('camera_frame_image', cap.frame && cap.framesVisible, cap);

    // ---- sign out closes the stream
    result.step = 'logout';
    await page.click('#logout');
    await page.waitForSelector('#ws-state[data-state="closed"]');
    check('logout_closes', await page.locator('#connect').isDisabled()
          && await page.locator('#login-form').isVisible());

    // ---- what went over the wire (the mocked socket is not in ws_urls)
    result.step = 'final';
    const wsOrigin = origin.replace(/^http/, 'ws');
    check('ws_urls', result.ws_urls.length === 2
          && result.ws_urls.every((w) => w.startsWith(wsOrigin + '/ws/')
                                  && !/access_token|token=/.test(w) && !JWT.test(w)),
          result.ws_urls);
    check('no_foreign_requests', result.foreign_requests.length === 0, result.foreign_requests);
    check('no_token_in_console', !result.token_in_console);
    check('no_console_errors', result.console_errors.length === 0, result.console_errors);
    check('no_page_errors', result.page_errors.length === 0, result.page_errors);
    result.ok = true;
}

main().then(() => done(0), (e) => {
    result.error = String(e && e.message || e).split('\n')[0].slice(0, 500);
    done(1);
});

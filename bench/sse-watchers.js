// fleetgate bench helper: N EventSource-style watchers on one stream; each
// reports the milliseconds (since the start time given) at which it saw
// "complete" and "results".  Output: one JSON line when all are done.
'use strict';
const http = require('http');

const [url, token, n, t0] = [process.argv[2], process.argv[3], +process.argv[4], +process.argv[5]];
const done = [];

for (let i = 0; i < n; i++) {
  const req = http.get(url, { headers: { Authorization: `Bearer ${token}` }, agent: false }, (res) => {
    let tail = '';
    const rec = {};
    res.on('data', (d) => {
      // only the new bytes (and a little of the old, for split lines)
      const s = tail + d;
      if (!rec.complete && s.includes('event: complete\n')) rec.complete = Date.now() - t0;
      if (!rec.results && s.includes('event: results\n')) rec.results = Date.now() - t0;
      tail = s.slice(-32);
    });
    res.on('end', () => { done.push(rec); if (done.length === n) finish(); });
  });
  req.on('error', (e) => { done.push({ error: e.message }); if (done.length === n) finish(); });
}

function finish() {
  const r = done.map((d) => d.results).filter((x) => x !== undefined).sort((a, b) => a - b);
  console.log(JSON.stringify({ watchers: n, got_results: r.length,
    results_ms_min: r[0], results_ms_p50: r[Math.floor(r.length / 2)], results_ms_max: r[r.length - 1] }));
}

// The fleet dashboard served by the collector at `/`: one self-contained page (inline CSS, JS and
// SVG, nothing from a CDN: devices and collectors are often offline). Built for fleets of
// thousands: a table of devices, one page at a time from /api/table (sorted and filtered on the
// server, so neither the reply nor the page grows with the fleet), per-class aggregates, and the
// classes drifting from their calibration. Clicking a device fetches /api/devices/<id>/windows and
// draws its p95 latency and joules per inference over time (with on-device accuracy and the latest
// temperature where devices report them), the exit-rate histogram and the online state. Rollouts
// (/api/rollouts, the newest few) show per class their waves, gate values and reasons and how many
// devices are in each phase. All text goes in through textContent, because
// bundle names come from devices. The script is plain browser JS kept in its own string (no
// backticks or template holes inside) so http.ts can allow exactly it by hash in the CSP.

export const DASHBOARD_SCRIPT = String.raw`
'use strict';
var SVGNS = 'http://www.w3.org/2000/svg';
var params = new URLSearchParams(location.search);
var refreshS = Math.max(1, Number(params.get('refresh')) || 5);
var renders = 0;

function el(tag, attrs, text) {
  var e = document.createElement(tag);
  for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svgEl(tag, attrs, text) {
  var e = document.createElementNS(SVGNS, tag);
  for (var k in attrs || {}) e.setAttribute(k, String(attrs[k]));
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmt(v, digits) {
  return v === null || v === undefined || !isFinite(v) ? '-' : Number(v).toFixed(digits);
}
// A stored time outside the Date range must not stop the page: toISOString would throw for it.
function time(ms) {
  var d = new Date(ms);
  return isNaN(d.getTime()) ? '(time out of range)' : d.toISOString().replace('T', ' ').slice(0, 19);
}

var W = 360, H = 150, PL = 48, PR = 10, PT = 20, PB = 28;

// A line chart of points {x (ms), y}; one circle per point, each with a tooltip.
function lineChart(cls, title, unit, points, digits) {
  var svg = svgEl('svg', { class: 'chart ' + cls, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': title });
  svg.appendChild(svgEl('text', { x: PL, y: 12, class: 'ttl' }, title + ' (' + unit + ')'));
  svg.appendChild(svgEl('line', { x1: PL, y1: H - PB, x2: W - PR, y2: H - PB, class: 'axis' }));
  svg.appendChild(svgEl('line', { x1: PL, y1: PT, x2: PL, y2: H - PB, class: 'axis' }));
  if (!points.length) {
    svg.appendChild(svgEl('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' }, 'no windows yet'));
    return svg;
  }
  var xs = points.map(function (p) { return p.x; }), ys = points.map(function (p) { return p.y; });
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
  var y0 = Math.min(0, Math.min.apply(null, ys)), y1 = Math.max.apply(null, ys);
  if (y1 <= y0) y1 = y0 + 1;
  function sx(x) { return x1 === x0 ? (PL + W - PR) / 2 : PL + ((x - x0) / (x1 - x0)) * (W - PL - PR); }
  function sy(y) { return H - PB - ((y - y0) / (y1 - y0)) * (H - PT - PB - 8); }
  svg.appendChild(svgEl('text', { x: PL - 4, y: sy(y1) + 4, class: 'tick', 'text-anchor': 'end' }, fmt(y1, digits)));
  svg.appendChild(svgEl('text', { x: PL - 4, y: sy(y0) + 4, class: 'tick', 'text-anchor': 'end' }, fmt(y0, digits)));
  svg.appendChild(svgEl('text', { x: PL, y: H - 8, class: 'tick' }, time(x0).slice(11)));
  svg.appendChild(svgEl('text', { x: W - PR, y: H - 8, class: 'tick', 'text-anchor': 'end' }, time(x1).slice(11)));
  svg.appendChild(svgEl('polyline', { class: 'line', points: points.map(function (p) { return sx(p.x).toFixed(1) + ',' + sy(p.y).toFixed(1); }).join(' ') }));
  points.forEach(function (p) {
    var c = svgEl('circle', { class: 'pt', cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: 2.5, 'data-y': p.y });
    c.appendChild(svgEl('title', {}, time(p.x) + ': ' + fmt(p.y, digits) + ' ' + unit));
    svg.appendChild(c);
  });
  return svg;
}

// Bars of the share of inferences that left at each exit; data-count holds the raw count.
function exitChart(exits) {
  var svg = svgEl('svg', { class: 'chart chart-exits', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'exit rates' });
  svg.appendChild(svgEl('text', { x: PL, y: 12, class: 'ttl' }, 'exit rate (% of inferences)'));
  svg.appendChild(svgEl('line', { x1: PL, y1: H - PB, x2: W - PR, y2: H - PB, class: 'axis' }));
  var total = exits.reduce(function (a, b) { return a + b; }, 0);
  if (!exits.length || total === 0) {
    svg.appendChild(svgEl('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' }, 'no inferences yet'));
    return svg;
  }
  var slot = (W - PL - PR) / exits.length, bw = Math.min(48, slot * 0.7), top = PT + 10;
  exits.forEach(function (n, k) {
    var share = n / total, h = share * (H - PB - top), x = PL + k * slot + (slot - bw) / 2;
    var r = svgEl('rect', { class: 'bar', x: x.toFixed(1), y: (H - PB - h).toFixed(1), width: bw.toFixed(1), height: h.toFixed(1), 'data-exit': k, 'data-count': n });
    r.appendChild(svgEl('title', {}, 'exit ' + k + ': ' + n + ' of ' + total));
    svg.appendChild(r);
    svg.appendChild(svgEl('text', { x: x + bw / 2, y: H - PB - h - 3, class: 'tick', 'text-anchor': 'middle' }, (share * 100).toFixed(1) + '%'));
    svg.appendChild(svgEl('text', { x: x + bw / 2, y: H - 8, class: 'tick', 'text-anchor': 'middle' }, 'exit ' + k));
  });
  return svg;
}

function getJson(url) {
  return fetch(url, { cache: 'no-store' }).then(function (r) {
    return r.json().then(function (body) {
      if (!r.ok) throw new Error(url + ': ' + (body && body.error ? body.error : 'HTTP ' + r.status));
      return body;
    });
  });
}

function jobText(j) {
  return (j.job || '-') + ': ' + j.state + (j.step && j.state === 'in-progress' ? ' (' + j.step + ', ' + Math.round(100 * j.progress) + ' %)' : '') + (j.reason ? ' · ' + j.reason : '');
}
function jobLine(j) {
  return el('p', { class: 'job job-' + j.state, 'data-job-state': j.state }, 'flash job ' + jobText(j));
}

function deviceCard(d, w, j) {
  var card = el('section', { class: 'device', 'data-device': d.device, 'data-online': String(d.online) });
  var head = el('header');
  head.appendChild(el('h2', {}, d.device));
  head.appendChild(el('span', { class: 'state ' + (d.online ? 'on' : 'off') }, d.online ? 'online' : 'offline'));
  head.appendChild(el('span', { class: 'meta' }, 'fleet ' + d.fleet + ' · ' + (d.bundle ? d.bundle.name + ' ' + d.bundle.version : 'no birth seen') + ' · last seen ' + time(d.lastSeen) + ' UTC'));
  card.appendChild(head);
  var stats = el('p', { class: 'stats' });
  stats.textContent = d.inferences + ' inferences in ' + d.windows + ' windows · p95 ' + fmt(d.p95LatencyMs, 1) + ' ms (latest windows) · ' + fmt(d.joulesPerInference, 4) + ' J/inference' +
    (d.accuracy == null ? '' : ' · accuracy ' + fmt(100 * d.accuracy, 1) + ' % of ' + d.labelled + ' labelled') +
    (d.temperatureC == null ? '' : ' · ' + fmt(d.temperatureC, 1) + ' °C');
  card.appendChild(stats);
  if (j) card.appendChild(jobLine(j));
  var charts = el('div', { class: 'charts' });
  charts.appendChild(lineChart('chart-latency', 'p95 latency', 'ms', w.windows.map(function (x) { return { x: x.windowEnd, y: x.latencyMs.p95 }; }), 1));
  charts.appendChild(lineChart('chart-energy', 'energy', 'J/inference', w.windows.filter(function (x) { return x.joulesPerInference !== null; }).map(function (x) { return { x: x.windowEnd, y: x.joulesPerInference }; }), 4));
  charts.appendChild(exitChart(d.exits));
  card.appendChild(charts);
  if (w.windows.length >= w.limit) card.appendChild(el('p', { class: 'note' }, 'charts show the latest ' + w.limit + ' windows'));
  return card;
}

// ---- the device table: one page from /api/table, sorted and filtered on the server ----

var COLUMNS = [
  { key: 'device', label: 'device' },
  { key: 'fleet', label: 'fleet' },
  { key: 'class', label: 'class' },
  { key: 'bundle', label: 'bundle' },
  { key: 'online', label: 'online' },
  { key: 'p95', label: 'p95 ms' },
  { key: 'exit0', label: 'exit rates %' },
  { key: 'jpi', label: 'J/inference' },
  { key: 'accuracy', label: 'accuracy %' },
  { key: 'temperature', label: '°C' },
  { key: 'lastSeen', label: 'last seen (UTC)' },
  { key: 'job', label: 'flash job', unsorted: true }
];
var view = { sort: params.get('sort') || 'device', dir: params.get('dir') === 'desc' ? 'desc' : 'asc', q: params.get('q') || '', cls: '', online: '', offset: 0, limit: Math.min(500, Math.max(1, Number(params.get('limit')) || 100)) };
var selected = null, selectedRow = null, seq = 0, timer = null;
// The latest reported flash job per fleet/device, from /api/jobs (the collector keeps them in memory).
var jobs = {};

// At most 8 exits in a cell: rows stored before exit histograms were bounded can hold thousands.
function rates(r) {
  if (!r.length) return '-';
  return r.slice(0, 8).map(function (x) { return fmt(100 * x, 1); }).join(' / ') + (r.length > 8 ? ' … (' + r.length + ' exits)' : '');
}

// Each cell keeps its raw value in data-value, so what is shown can be checked against the store.
function cell(tr, key, text, raw) {
  var td = el('td', { 'data-key': key, 'data-value': raw === null || raw === undefined ? '' : String(raw) }, text);
  tr.appendChild(td);
  return td;
}

function deviceRow(d) {
  var tr = el('tr', { 'data-device': d.device, 'data-online': String(d.online), tabindex: '0' });
  if (d.device === selected) tr.setAttribute('aria-selected', 'true');
  cell(tr, 'device', d.device, d.device);
  cell(tr, 'fleet', d.fleet, d.fleet);
  cell(tr, 'class', d.deviceClass === null ? '-' : d.deviceClass, d.deviceClass);
  cell(tr, 'bundle', d.bundle ? d.bundle.name + ' ' + d.bundle.version : 'no birth seen', d.bundle ? d.bundle.name + ' ' + d.bundle.version : null);
  cell(tr, 'online', d.online ? 'online' : 'offline', d.online ? 1 : 0).className = 'state ' + (d.online ? 'on' : 'off');
  cell(tr, 'p95', fmt(d.p95LatencyMs, 2), d.p95LatencyMs);
  cell(tr, 'exit0', rates(d.exitRates), d.exitRates.length ? d.exitRates.join(',') : null);
  cell(tr, 'jpi', fmt(d.joulesPerInference, 4), d.joulesPerInference);
  cell(tr, 'accuracy', d.accuracy === null ? '-' : fmt(100 * d.accuracy, 1), d.accuracy);
  cell(tr, 'temperature', fmt(d.temperatureC, 1), d.temperatureC);
  cell(tr, 'lastSeen', time(d.lastSeen), d.lastSeen);
  var j = jobs[d.fleet + '/' + d.device];
  var jc = cell(tr, 'job', j ? jobText(j) : '-', j ? j.state : null);
  if (j) { jc.className = 'job job-' + j.state; jc.setAttribute('data-job-state', j.state); }
  function open() { selected = d.device; selectedRow = d; showDetail(); markSelected(); }
  tr.addEventListener('click', open);
  tr.addEventListener('keydown', function (e) { if (e.key === 'Enter') open(); });
  return tr;
}

function markSelected() {
  document.querySelectorAll('#devices tbody tr').forEach(function (tr) {
    if (tr.getAttribute('data-device') === selected) tr.setAttribute('aria-selected', 'true');
    else tr.removeAttribute('aria-selected');
  });
}

function classRow(c) {
  var tr = el('tr', { 'data-class': c.deviceClass === null ? '' : c.deviceClass, 'data-drifting': String(c.drifting) });
  cell(tr, 'class', c.deviceClass === null ? '(no birth)' : c.deviceClass, c.deviceClass);
  cell(tr, 'devices', String(c.devices), c.devices);
  cell(tr, 'online', String(c.online), c.online);
  cell(tr, 'meanP95', fmt(c.meanP95Ms, 2), c.meanP95Ms);
  cell(tr, 'maxP95', fmt(c.maxP95Ms, 2), c.maxP95Ms);
  cell(tr, 'exitRates', rates(c.exitRates), c.exitRates.join(','));
  cell(tr, 'jpi', fmt(c.joulesPerInference, 4), c.joulesPerInference);
  cell(tr, 'accuracy', c.accuracy === null ? '-' : fmt(100 * c.accuracy, 1), c.accuracy);
  cell(tr, 'maxTemperature', fmt(c.maxTemperatureC, 1), c.maxTemperatureC);
  cell(tr, 'drift', c.drifting ? 'DRIFT' : '', c.drifting ? 1 : 0);
  return tr;
}

function header() {
  var tr = el('tr');
  COLUMNS.forEach(function (c) {
    if (c.unsorted) { tr.appendChild(el('th', {}, c.label)); return; }
    var th = el('th', { 'data-sort': c.key, 'aria-sort': view.sort === c.key ? (view.dir === 'asc' ? 'ascending' : 'descending') : 'none' });
    var b = el('button', { type: 'button' }, c.label + (view.sort === c.key ? (view.dir === 'asc' ? ' ▲' : ' ▼') : ''));
    b.addEventListener('click', function () {
      if (view.sort === c.key) view.dir = view.dir === 'asc' ? 'desc' : 'asc';
      else { view.sort = c.key; view.dir = 'asc'; }
      view.offset = 0;
      refresh();
    });
    th.appendChild(b);
    tr.appendChild(th);
  });
  return tr;
}

function query() {
  var p = new URLSearchParams({ sort: view.sort, dir: view.dir, offset: String(view.offset), limit: String(view.limit) });
  if (view.q) p.set('q', view.q);
  if (view.cls) p.set('class', view.cls);
  if (view.online) p.set('online', view.online);
  return p.toString();
}

function render(t, qs) {
  document.querySelector('#devices thead').replaceChildren(header());
  var body = document.querySelector('#devices tbody');
  body.replaceChildren.apply(body, t.rows.map(deviceRow));
  if (!t.rows.length) body.appendChild(el('tr', {}, t.total ? 'no device matches the filter' : 'no devices recorded yet'));
  var cb = document.querySelector('#classes tbody');
  cb.replaceChildren.apply(cb, t.classes.map(classRow));
  var sel = document.getElementById('class');
  var keep = view.cls;
  sel.replaceChildren(el('option', { value: '' }, 'every class'));
  t.classNames.forEach(function (n) { var o = el('option', { value: n }, n); if (n === keep) o.selected = true; sel.appendChild(o); });
  var drift = document.getElementById('drift');
  drift.replaceChildren.apply(drift, t.drift.filter(function (c) { return c.drifting; }).map(function (c) {
    return el('li', { 'data-class': c.deviceClass, 'data-fleet': c.fleet }, c.fleet + '/' + c.deviceClass + ': ' + c.reasons.join('; '));
  }));
  var last = Math.min(t.matched, t.offset + t.rows.length);
  document.getElementById('page').textContent = t.matched ? (t.offset + 1) + '–' + last + ' of ' + t.matched + (t.matched < t.total ? ' matching' : '') : '0 of ' + t.total;
  document.getElementById('prev').disabled = t.offset === 0;
  document.getElementById('next').disabled = last >= t.matched;
  var online = t.classes.reduce(function (a, c) { return a + c.online; }, 0);
  document.getElementById('summary').textContent = t.total + (t.total === 1 ? ' device, ' : ' devices, ') + (t.matched === t.total ? online + ' online' : t.matched + ' shown by the filter, ' + online + ' of them online') + ' · updated ' + time(t.generatedAt) + ' UTC · every ' + refreshS + ' s';
  var c = Object.keys(t.counters).filter(function (k) { return t.counters[k] > 0; }).map(function (k) { return k + ' ' + t.counters[k]; });
  document.getElementById('counters').textContent = 'collector counters: ' + (c.length ? c.join(', ') : 'none');
  document.body.setAttribute('data-query', qs);
  document.body.setAttribute('data-matched', String(t.matched));
  var fresh = selected === null ? null : t.rows.filter(function (r) { return r.device === selected; })[0];
  if (fresh) selectedRow = fresh;
}

// ---- rollouts from /api/rollouts: per class its waves, gate values and reasons, device phases ----

var PHASES = ['waiting', 'updating', 'updated', 'failed', 'rolling-back', 'rolled-back', 'rollback-failed', 'skipped'];

function stepText(s) {
  var when = s.passedAt !== null ? 'passed' : s.doneAt !== null ? 'done, gates pending' : s.openedAt !== null ? 'open' : 'not opened';
  return s.name + ' (' + s.devices + '): ' + when;
}

function gateItem(g) {
  return el('li', { class: 'gate gate-' + g.verdict, 'data-gate': g.gate, 'data-verdict': g.verdict, 'data-value': g.value === null ? '' : String(g.value) }, g.gate + ' ' + g.verdict + ': ' + g.reason);
}

function rolloutClassRow(c) {
  var tr = el('tr', { 'data-class': c['class'], 'data-status': c.status });
  cell(tr, 'class', c['class'], c['class']);
  cell(tr, 'status', c.status + (c.reason ? ': ' + c.reason : ''), c.status).className = 'rstatus rstatus-' + c.status;
  cell(tr, 'current', c.current === null ? '-' : c.current, c.current);
  var steps = cell(tr, 'steps', '', c.steps.length);
  var ol = el('ol', { class: 'steps' });
  c.steps.forEach(function (s) {
    var li = el('li', { 'data-step': s.name }, stepText(s));
    if (s.gates.length) { var ul = el('ul', { class: 'gates' }); s.gates.forEach(function (g) { ul.appendChild(gateItem(g)); }); li.appendChild(ul); }
    ol.appendChild(li);
  });
  steps.appendChild(ol);
  PHASES.forEach(function (p) { var n = c.phases[p] || 0; cell(tr, 'phase-' + p, n ? String(n) : '', n); });
  return tr;
}

function rolloutSection(r) {
  var box = el('section', { class: 'rollout', 'data-rollout': r.id, 'data-status': r.status });
  box.appendChild(el('h3', {}, 'rollout ' + r.id + ' · fleet ' + r.fleet + ' · ' + r.target.model.name + ' ' + r.target.model.version + ' (' + r.target.bundle.slice(0, 12) + ') · ' + r.status + (r.reason ? ': ' + r.reason : '')));
  box.appendChild(el('p', { class: 'meta' }, r.devices + ' devices, ' + r.touched + ' sent the bundle · started ' + time(r.createdAt) + ' UTC · updated ' + time(r.updatedAt) + ' UTC'));
  var t = el('table', { class: 'rollout-classes' });
  var head = el('tr');
  ['class', 'status', 'current step', 'steps and gates'].concat(PHASES).forEach(function (h) { head.appendChild(el('th', {}, h)); });
  t.appendChild(el('thead')).appendChild(head);
  var body = t.appendChild(el('tbody'));
  r.classes.forEach(function (c) { body.appendChild(rolloutClassRow(c)); });
  box.appendChild(t);
  return box;
}

function renderRollouts(api) {
  var box = document.getElementById('rollouts');
  box.replaceChildren.apply(box, api.rollouts.map(rolloutSection));
  if (!api.rollouts.length) box.appendChild(el('p', { class: 'note' }, 'no rollouts recorded'));
  else if (api.total > api.rollouts.length) box.appendChild(el('p', { class: 'note' }, 'the latest ' + api.rollouts.length + ' of ' + api.total + ' rollouts'));
}

// The charts of one device, fetched only while it is selected.
function showDetail() {
  var box = document.getElementById('detail');
  if (selected === null) { box.replaceChildren(); return Promise.resolve(); }
  var d = selectedRow;
  return getJson('api/devices/' + encodeURIComponent(d.device) + '/windows').then(function (w) {
    if (selected !== d.device) return;
    var close = el('button', { type: 'button', class: 'close' }, 'close');
    close.addEventListener('click', function () { selected = null; selectedRow = null; showDetail(); markSelected(); });
    box.replaceChildren(close, deviceCard(selectedRow, w, jobs[d.fleet + '/' + d.device]));
    box.setAttribute('data-device', d.device);
  });
}

function refresh() {
  var mine = ++seq, qs = query();
  return Promise.all([getJson('api/table?' + qs), getJson('api/jobs'), getJson('api/rollouts')]).then(function (all) {
    if (mine !== seq) return;
    var t = all[0];
    jobs = {};
    all[1].jobs.forEach(function (j) { jobs[j.fleet + '/' + j.device] = j; });
    render(t, qs);
    renderRollouts(all[2]);
    return showDetail().then(function () {
      document.getElementById('error').textContent = '';
      renders++;
      document.body.setAttribute('data-renders', String(renders));
      document.body.setAttribute('data-state', 'ready');
    });
  }).catch(function (err) {
    document.getElementById('error').textContent = 'cannot update: ' + err.message;
    document.body.setAttribute('data-state', 'error');
  });
}

document.getElementById('filter').value = view.q;
document.getElementById('filter').addEventListener('input', function (e) {
  clearTimeout(timer);
  timer = setTimeout(function () { view.q = e.target.value; view.offset = 0; refresh(); }, 150);
});
document.getElementById('class').addEventListener('change', function (e) { view.cls = e.target.value; view.offset = 0; refresh(); });
document.getElementById('online').addEventListener('change', function (e) { view.online = e.target.value; view.offset = 0; refresh(); });
document.getElementById('prev').addEventListener('click', function () { view.offset = Math.max(0, view.offset - view.limit); refresh(); });
document.getElementById('next').addEventListener('click', function () { view.offset += view.limit; refresh(); });

function loop() {
  refresh().then(function () { setTimeout(loop, refreshS * 1000); });
}
loop();
`;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgeexit fleet</title>
<link rel="icon" href="data:,">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; padding: 1rem 1.5rem; background: #f6f7f9; color: #1d2330; }
  h1 { font-size: 1.3rem; margin: 0 0 .25rem; }
  #summary, #counters { color: #555; margin: .1rem 0; }
  #error { color: #b00020; font-weight: 600; }
  .device { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: .75rem 1rem; margin: 1rem 0; }
  .device header { display: flex; gap: .75rem; align-items: baseline; flex-wrap: wrap; }
  .device h2 { font-size: 1.1rem; margin: 0; }
  .state { font-weight: 600; padding: 0 .4rem; border-radius: 4px; }
  .state.on { color: #0a6b2d; background: #dff5e6; }
  .state.off { color: #7a1c1c; background: #f8e1e1; }
  .meta, .stats, .note { color: #555; margin: .3rem 0; }
  .job { margin: .3rem 0; }
  .job-failed, .job-rolled-back, .job-rejected, .job-timed-out { color: #a40000; }
  .job-succeeded { color: #1a6b1a; }
  .charts { display: flex; flex-wrap: wrap; gap: .5rem; }
  .chart { width: 360px; height: 150px; background: #fbfcfd; border: 1px solid #eef0f3; }
  .chart .axis { stroke: #9aa3af; stroke-width: 1; }
  .chart .line { fill: none; stroke: #2f6fd6; stroke-width: 1.5; }
  .chart-energy .line { stroke: #d2691e; }
  .chart .pt { fill: #2f6fd6; }
  .chart-energy .pt { fill: #d2691e; }
  .chart .bar { fill: #5a8f3d; }
  .chart text { font-size: 10px; fill: #444; }
  .chart .ttl { font-weight: 600; }
  h2 { font-size: 1rem; margin: 1rem 0 .3rem; }
  table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
  th, td { border-bottom: 1px solid #eef0f3; padding: .15rem .5rem; text-align: left; white-space: nowrap; }
  th button { font: inherit; font-weight: 600; background: none; border: 0; cursor: pointer; padding: 0; }
  #devices tbody tr { cursor: pointer; }
  #devices tbody tr:hover, #devices tbody tr[aria-selected="true"] { background: #eef4ff; }
  #classes tr[data-drifting="true"] td, #drift li { color: #7a1c1c; font-weight: 600; }
  #controls { display: flex; gap: .5rem; align-items: center; margin: .3rem 0; flex-wrap: wrap; }
  #filter { min-width: 18rem; }
  #detail .close { float: right; }
  .rollout { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: .5rem 1rem; margin: .5rem 0; }
  .rollout h3 { font-size: 1rem; margin: 0; }
  .rollout td { vertical-align: top; }
  .rollout ol.steps, .rollout ul.gates { margin: 0; padding-left: 1.2rem; }
  .rstatus-aborted, .gate-fail { color: #a40000; font-weight: 600; }
  .rstatus-completed, .gate-pass { color: #1a6b1a; }
  .gate-unknown { color: #777; }
</style>
</head>
<body data-state="loading">
<h1>edgeexit fleet</h1>
<p id="summary">loading…</p>
<p id="counters"></p>
<p id="error" role="alert"></p>
<ul id="drift" aria-label="classes drifting from their calibration"></ul>
<h2>per class</h2>
<table id="classes">
<thead><tr><th>class</th><th>devices</th><th>online</th><th>mean p95 ms</th><th>max p95 ms</th><th>exit rates %</th><th>J/inference</th><th>accuracy %</th><th>max °C</th><th>drift</th></tr></thead>
<tbody></tbody>
</table>
<h2>rollouts</h2>
<div id="rollouts" aria-label="rollouts, newest first"></div>
<h2>devices</h2>
<div id="controls">
<input id="filter" type="search" placeholder="filter: device, fleet, class or bundle" aria-label="filter devices">
<select id="class" aria-label="class"><option value="">every class</option></select>
<select id="online" aria-label="online"><option value="">online and offline</option><option value="1">online</option><option value="0">offline</option></select>
<button id="prev" type="button">previous</button> <span id="page"></span> <button id="next" type="button">next</button>
</div>
<table id="devices"><thead></thead><tbody></tbody></table>
<section id="detail" aria-live="polite"></section>
<noscript>This page needs JavaScript; the same data is at <a href="api/table">api/table</a> and <a href="metrics">metrics</a>.</noscript>
<script>${DASHBOARD_SCRIPT}</script>
</body>
</html>
`;

// The fleet dashboard served by the collector at `/`: one self-contained page (inline CSS, JS and
// SVG, nothing from a CDN: devices and collectors are often offline). It polls /api/fleet and
// /api/devices/<id>/windows and draws per-device p95 latency and joules per inference over time
// (with on-device accuracy and the latest temperature where devices report them),
// the exit-rate histogram and the online state. All text goes in through textContent, because
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

function jobLine(j) {
  var text = 'flash job ' + (j.job || '-') + ': ' + j.state + (j.step && j.state === 'in-progress' ? ' (' + j.step + ', ' + Math.round(100 * j.progress) + ' %)' : '') + (j.reason ? ' · ' + j.reason : '');
  return el('p', { class: 'job job-' + j.state, 'data-job-state': j.state }, text);
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

function refresh() {
  return Promise.all([getJson('api/fleet'), getJson('api/jobs')]).then(function (both) {
    var fleet = both[0];
    var jobs = {};
    both[1].jobs.forEach(function (j) { jobs[j.fleet + '/' + j.device] = j; });
    return Promise.all(fleet.devices.map(function (d) { return getJson('api/devices/' + encodeURIComponent(d.device) + '/windows'); })).then(function (ws) {
      var list = document.getElementById('devices');
      list.replaceChildren.apply(list, fleet.devices.map(function (d, i) { return deviceCard(d, ws[i], jobs[d.fleet + '/' + d.device]); }));
      if (!fleet.devices.length) list.appendChild(el('p', { class: 'empty' }, 'no devices recorded yet'));
      var online = fleet.devices.filter(function (d) { return d.online; }).length;
      document.getElementById('summary').textContent = fleet.devices.length + (fleet.devices.length === 1 ? ' device, ' : ' devices, ') + online + ' online · updated ' + time(fleet.generatedAt) + ' UTC · every ' + refreshS + ' s';
      var c = Object.keys(fleet.counters).filter(function (k) { return fleet.counters[k] > 0; }).map(function (k) { return k + ' ' + fleet.counters[k]; });
      document.getElementById('counters').textContent = 'collector counters: ' + (c.length ? c.join(', ') : 'none');
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
</style>
</head>
<body data-state="loading">
<h1>edgeexit fleet</h1>
<p id="summary">loading…</p>
<p id="counters"></p>
<p id="error" role="alert"></p>
<main id="devices"></main>
<noscript>This page needs JavaScript; the same data is at <a href="api/fleet">api/fleet</a> and <a href="metrics">metrics</a>.</noscript>
<script>${DASHBOARD_SCRIPT}</script>
</body>
</html>
`;

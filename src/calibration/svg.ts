// A small SVG writer for the accuracy–latency frontier plot: no plotting dependency, output that
// any XML parser accepts (every text escaped), markers identified by id so tests and tools can
// find the chosen point, the no-exit baseline and the oracle bound.
export interface Pt {
  x: number;
  y: number;
}

export interface FrontierPlot {
  frontier: Pt[];
  chosen: Pt;
  noExit: Pt;
  oracle: Pt;
  target?: number | undefined;
  xLabel: string;
  yLabel: string;
  title: string;
}

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

const W = 640;
const H = 420;
const L = 70;
const R = 20;
const T = 40;
const B = 60;

/**
 * An SVG plot of the accuracy/latency frontier with the chosen policy, no-exit and oracle points
 * and the target line.
 *
 * @example
 * ```ts
 * import { frontierSvg } from 'edgeexit/calibration';
 * const svg = frontierSvg({
 *   frontier: [{ x: 0.8, y: 0.88 }, { x: 1.2, y: 0.9 }], chosen: { x: 1.2, y: 0.9 },
 *   noExit: { x: 2, y: 0.91 }, oracle: { x: 0.6, y: 0.95 }, target: 1.5,
 *   xLabel: 'mean latency (ms)', yLabel: 'accuracy', title: 'fmnist-branchy on rpi4',
 * });
 * ```
 */
export function frontierSvg(p: FrontierPlot): string {
  const pts = [...p.frontier, p.chosen, p.noExit, p.oracle];
  const xs = pts.map((q) => q.x).concat(p.target !== undefined ? [p.target] : []);
  const ys = pts.map((q) => q.y);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  // Pad so markers on the edge stay visible and a degenerate range still has a width.
  const px = (x1 - x0 || Math.abs(x0) || 1) * 0.05;
  const py = (y1 - y0 || 0.01) * 0.05;
  x0 -= px;
  x1 += px;
  y0 -= py;
  y1 += py;
  const sx = (x: number): number => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number): number => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const f = (v: number): string => v.toFixed(2);
  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<title>${escapeXml(p.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="white"/>`);
  out.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`);
  out.push(`<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`);
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + ((x1 - x0) * i) / 4;
    const yv = y0 + ((y1 - y0) * i) / 4;
    out.push(`<text x="${f(sx(xv))}" y="${H - B + 16}" text-anchor="middle">${xv.toFixed(3)}</text>`);
    out.push(`<text x="${L - 6}" y="${f(sy(yv) + 4)}" text-anchor="end">${(yv * 100).toFixed(1)}%</text>`);
  }
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 18}" text-anchor="middle">${escapeXml(p.xLabel)}</text>`);
  out.push(`<text x="16" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 ${(T + H - B) / 2})">${escapeXml(p.yLabel)}</text>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${escapeXml(p.title)}</text>`);
  if (p.target !== undefined) {
    out.push(`<line id="target" x1="${f(sx(p.target))}" y1="${T}" x2="${f(sx(p.target))}" y2="${H - B}" stroke="gray" stroke-dasharray="4 3"/>`);
  }
  if (p.frontier.length) {
    // A step line: accuracy holds until the next frontier point's latency.
    const d: string[] = [];
    p.frontier.forEach((q, i) => {
      d.push(`${i === 0 ? 'M' : 'H'}${f(sx(q.x))}`);
      if (i === 0) d[0] += ` ${f(sy(q.y))}`;
      else d.push(`V${f(sy(q.y))}`);
    });
    out.push(`<path id="frontier" d="${d.join(' ')}" fill="none" stroke="steelblue" stroke-width="1.5"/>`);
  }
  out.push(`<circle id="chosen" cx="${f(sx(p.chosen.x))}" cy="${f(sy(p.chosen.y))}" r="6" fill="crimson"><title>chosen</title></circle>`);
  out.push(`<rect id="no-exit" x="${f(sx(p.noExit.x) - 5)}" y="${f(sy(p.noExit.y) - 5)}" width="10" height="10" fill="black"><title>no exit (last exit only)</title></rect>`);
  out.push(`<path id="oracle" d="M${f(sx(p.oracle.x))} ${f(sy(p.oracle.y) - 7)} l6 11 h-12 z" fill="darkgreen"><title>oracle bound</title></path>`);
  const legend = [
    ['crimson', 'chosen'],
    ['black', 'no exit'],
    ['darkgreen', 'oracle bound'],
    ['steelblue', 'frontier'],
  ];
  legend.forEach(([c, t], i) => {
    out.push(`<rect x="${W - R - 120}" y="${T + 4 + i * 16}" width="10" height="10" fill="${c}"/><text x="${W - R - 104}" y="${T + 13 + i * 16}">${escapeXml(t!)}</text>`);
  });
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}

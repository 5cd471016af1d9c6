// charts.js: the dashboard's two charts, drawn as SVG by hand.
//
// Why not a charting library: the page needs one line chart (two loss terms over steps, on two
// y scales) and one horizontal bar chart (top-1 per model). Both together are the ~150 lines
// below; a library would add a dependency fetched at build time, a copy to serve and keep
// patched, and still need this much glue for the dual axis, the zoomed accuracy axis and the
// accessible text. Every chart is an <svg role="img"> whose aria-label says what it shows, and
// the numbers it draws are also in the page as text (value labels, tables).

const NS = 'http://www.w3.org/2000/svg';

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten;
// at least 1 when `whole`, for step numbers).
export function niceTicks(lo, hi, count, whole) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = Math.max((hi - lo) / Math.max(1, count), whole ? 1 : 0);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step)
    ticks.push(+v.toPrecision(12));
  if (ticks[ticks.length - 1] < hi) ticks.push(+(ticks[ticks.length - 1] + step).toPrecision(12));
  return ticks;
}

function fmt(v) {
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1000) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1).replace(/\.0$/, '');
  if (a >= 0.01) return v.toPrecision(2);
  return v.toExponential(0);
}

// A line chart of up to two series over a shared x, each series on its own y scale (left and
// right axis), so a cross-entropy near 0.4 and a PCA loss near 8 are both readable.
//   series: [{name, points: [[x, y], ...]}, ...]   xLabel: text under the x axis
// Replaces the content of `box`; call again with new points to update it.
export function lineChart(box, {series, xLabel, label}) {
  const W = 560, H = 250, m = {l: 52, r: 52, t: 14, b: 38};
  const svg = el('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label});
  svg.appendChild(el('title', {}, label));
  const all = series.flatMap(s => s.points);
  if (all.length === 0) {
    svg.appendChild(el('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty'},
                       'no stage-1 steps yet'));
    box.replaceChildren(svg);
    return;
  }
  const xs = niceTicks(Math.min(...all.map(p => p[0])), Math.max(...all.map(p => p[0])), 6, true);
  const x0 = xs[0], x1 = xs[xs.length - 1];
  const px = x => m.l + (x - x0) / (x1 - x0 || 1) * (W - m.l - m.r);
  const grid = el('g', {class: 'grid'}), axes = el('g', {class: 'axis'});
  svg.append(grid, axes);
  for (const t of xs) {
    axes.appendChild(el('text', {x: px(t), y: H - m.b + 15, 'text-anchor': 'middle'}, fmt(t)));
  }
  axes.appendChild(el('text', {x: (m.l + W - m.r) / 2, y: H - 6, 'text-anchor': 'middle'}, xLabel));
  axes.appendChild(el('line', {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b}));
  series.slice(0, 2).forEach((s, i) => {
    if (s.points.length === 0) return;
    const ys = niceTicks(Math.min(0, ...s.points.map(p => p[1])), Math.max(...s.points.map(p => p[1])), 5);
    const y0 = ys[0], y1 = ys[ys.length - 1];
    const py = y => H - m.b - (y - y0) / (y1 - y0 || 1) * (H - m.t - m.b);
    const ax = i === 0 ? m.l : W - m.r;
    axes.appendChild(el('line', {x1: ax, x2: ax, y1: m.t, y2: H - m.b}));
    for (const t of ys) {
      if (i === 0) grid.appendChild(el('line', {x1: m.l, x2: W - m.r, y1: py(t), y2: py(t)}));
      axes.appendChild(el('text', {x: i === 0 ? ax - 6 : ax + 6, y: py(t) + 4,
                                   'text-anchor': i === 0 ? 'end' : 'start', class: `series-${i}`,
                                   stroke: 'none'}, fmt(t)));
    }
    const d = s.points.map((p, k) => `${k ? 'L' : 'M'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join('');
    svg.appendChild(el('path', {d, class: `line series-${i}`, 'data-series': s.name,
                                'data-points': s.points.length}));
    // Few points (a short run, or the first seconds of one): mark each, or one point is nothing.
    if (s.points.length <= 40)
      for (const p of s.points)
        svg.appendChild(el('circle', {cx: px(p[0]).toFixed(1), cy: py(p[1]).toFixed(1), r: 2.5,
                                      class: `series-${i}`}));
  });
  box.replaceChildren(svg);
}

// Horizontal bars of top-1 accuracy (0..1), labels on the left, the value printed at each bar's
// end. The axis starts at a round value below the lowest bar (at most 20 points below it, never
// below 0) and says so, because the differences that matter here are tenths of a point.
//   bars: [{key, label, value, kind: 'fp32'|'ours'|'mid'|'base'}] (kind picks the colour)
export function barChart(box, {bars, label}) {
  const W = 560, row = 30, m = {l: 170, r: 70, t: 8, b: 34};
  const H = m.t + m.b + row * Math.max(1, bars.length);
  const svg = el('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label});
  svg.appendChild(el('title', {}, label));
  if (bars.length === 0) {
    svg.appendChild(el('text', {x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty'},
                       'no accuracies measured yet'));
    box.replaceChildren(svg);
    return;
  }
  const vals = bars.map(b => b.value * 100);
  const lo = Math.max(0, Math.floor((Math.min(...vals) - 2) / 5) * 5, Math.min(...vals) - 20);
  const ticks = niceTicks(Math.floor(lo), 100, 5).filter(t => t >= lo && t <= 100);
  const x0 = ticks[0];
  const px = v => m.l + (v - x0) / (100 - x0) * (W - m.l - m.r);
  const grid = el('g', {class: 'grid'}), axes = el('g', {class: 'axis'});
  svg.append(grid, axes);
  for (const t of ticks) {
    grid.appendChild(el('line', {x1: px(t), x2: px(t), y1: m.t, y2: H - m.b}));
    axes.appendChild(el('text', {x: px(t), y: H - m.b + 14, 'text-anchor': 'middle'}, `${fmt(t)}%`));
  }
  axes.appendChild(el('text', {x: (m.l + W - m.r) / 2, y: H - 4, 'text-anchor': 'middle'},
                      x0 > 0 ? `top-1 accuracy (axis starts at ${fmt(x0)}%)` : 'top-1 accuracy'));
  bars.forEach((b, i) => {
    const y = m.t + i * row;
    const v = b.value * 100;
    const g = el('g', {class: 'bar-row', 'data-key': b.key});
    g.appendChild(el('text', {x: m.l - 8, y: y + row / 2 + 4, 'text-anchor': 'end'}, b.label));
    g.appendChild(el('rect', {x: m.l, y: y + 5, height: row - 10, class: b.kind,
                              width: Math.max(1, px(Math.max(v, x0)) - m.l).toFixed(1)}));
    g.appendChild(el('text', {x: px(Math.max(v, x0)) + 6, y: y + row / 2 + 4, class: 'value',
                              'data-key': b.key}, `${v.toFixed(2)}%`));
    svg.appendChild(g);
  });
  axes.appendChild(el('line', {x1: m.l, x2: m.l, y1: m.t, y2: H - m.b}));
  box.replaceChildren(svg);
}

/* masklab embeddings map: a canvas scatter plot of 2-D map coordinates, points coloured by any column,
   and a lasso or box selection reported back as the set of selected point indices. No dependencies;
   inlined into both explorer pages (static_page.html and server_page.html, see pages.py).

   var map = MasklabMap(container, {x: [...], y: [...], columns: [{name, type: 'num'|'str'|'bool', values}],
                                    color: 'split', onSelect: function (indices or null) {...},
                                    load: function (name) { return a Promise of the column's values }});
   A column's values may be null: ``load`` fetches them when the user colours by it (the explore server).
   map.setActive(mask)          // mask[i] falsy: point i drawn faded (e.g. filtered out elsewhere)
   map.select(indices, quiet)   // set the selection from code (null clears); quiet: without calling onSelect
*/
(function (root) {
  'use strict';
  var PALETTE = [[47, 111, 223], [230, 126, 34], [46, 160, 67], [214, 39, 40], [148, 103, 189], [140, 86, 75],
                 [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]];
  // viridis at 5 stops, interpolated: perceptually even and readable for the colour-blind
  var RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  function ramp(t) {
    t = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
    var k = Math.min(RAMP.length - 2, Math.floor(t)), f = t - k, a = RAMP[k], b = RAMP[k + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }
  function fewIntegers(v) {   // e.g. cluster ids: colour them as categories, not along a ramp
    var seen = new Set();
    for (var i = 0; i < v.length; i++) {
      if (missing(v[i])) continue;
      if (Math.round(+v[i]) !== +v[i]) return false;
      seen.add(+v[i]);
      if (seen.size > 30) return false;
    }
    return true;
  }
  function missing(v) { return v === null || v === undefined || (typeof v === 'number' && isNaN(v)); }
  function css(c, a) { return 'rgba(' + Math.round(c[0]) + ',' + Math.round(c[1]) + ',' + Math.round(c[2]) + ',' + a + ')'; }

  function inside(px, py, poly) {   // ray casting: is (px, py) inside the polygon [[x, y], ...]
    var hit = false;
    for (var i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      var xi = poly[i][0], yi = poly[i][1], xj = poly[j][0], yj = poly[j][1];
      if (((yi > py) !== (yj > py)) && (px < (xj - xi) * (py - yi) / (yj - yi) + xi)) hit = !hit;
    }
    return hit;
  }

  function MasklabMap(container, opts) {
    var X = opts.x, Y = opts.y, N = X.length, columns = opts.columns || [];
    var doc = container.ownerDocument;
    function make(tag, attrs, text) {
      var e = doc.createElement(tag);
      Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      if (text) e.textContent = text;
      return e;
    }
    var bar = make('div', { class: 'map-bar' });
    var colorSel = make('select', { id: 'map-color', 'aria-label': 'colour points by' });
    columns.forEach(function (c) { colorSel.appendChild(make('option', { value: c.name }, c.name)); });
    var modeSel = make('select', { id: 'map-mode', 'aria-label': 'selection tool' });
    modeSel.appendChild(make('option', { value: 'lasso' }, 'lasso'));
    modeSel.appendChild(make('option', { value: 'box' }, 'box'));
    var clear = make('button', { id: 'map-clear', type: 'button', disabled: '' }, 'clear selection');
    var info = make('span', { id: 'map-info', class: 'muted' });
    var lab1 = make('label', {}, 'colour by '), lab2 = make('label', {}, 'select ');
    lab1.appendChild(colorSel); lab2.appendChild(modeSel);
    [lab1, lab2, clear, info].forEach(function (e) { bar.appendChild(e); });
    var legend = make('div', { id: 'map-legend', class: 'map-legend' });
    var canvas = make('canvas', { id: 'map-canvas', height: '320' });
    canvas.style.width = '100%'; canvas.style.height = '320px'; canvas.style.cursor = 'crosshair';
    canvas.style.background = '#fff'; canvas.style.border = '1px solid #d8dde6'; canvas.style.touchAction = 'none';
    container.appendChild(bar); container.appendChild(canvas); container.appendChild(legend);

    var ctx = canvas.getContext('2d'), active = null, selected = null, colors = [], path = null;
    var xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    for (var i = 0; i < N; i++) {
      if (missing(X[i]) || missing(Y[i])) continue;
      xmin = Math.min(xmin, X[i]); xmax = Math.max(xmax, X[i]); ymin = Math.min(ymin, Y[i]); ymax = Math.max(ymax, Y[i]);
    }
    var PAD = 8;
    function sx(v) { return PAD + (v - xmin) / ((xmax - xmin) || 1) * (canvas.width - 2 * PAD); }
    function sy(v) { return canvas.height - PAD - (v - ymin) / ((ymax - ymin) || 1) * (canvas.height - 2 * PAD); }

    function colourBy(name) {
      var col = columns.filter(function (c) { return c.name === name; })[0];
      legend.textContent = '';
      colors = new Array(N);
      if (!col || !col.values) {
        for (var i = 0; i < N; i++) colors[i] = PALETTE[0];
        if (col && opts.load) {
          legend.appendChild(make('span', { class: 'muted' }, 'loading ' + name + '\u2026'));
          opts.load(name).then(function (values) {
            col.values = values;
            if (colorSel.value === name) { colourBy(name); stale = true; draw(); }
          });
        }
        return;
      }
      var v = col.values;
      if (col.type === 'num' && !fewIntegers(v)) {
        var lo = Infinity, hi = -Infinity;
        v.forEach(function (x) { if (!missing(x)) { lo = Math.min(lo, +x); hi = Math.max(hi, +x); } });
        for (var k = 0; k < N; k++) colors[k] = missing(v[k]) ? [190, 190, 190] : ramp((+v[k] - lo) / ((hi - lo) || 1));
        legend.appendChild(make('span', {}, name + ': ' + (isFinite(lo) ? +lo.toPrecision(3) : '-')));
        var scale = make("span", { class: "map-ramp" });
        scale.style.background = 'linear-gradient(to right,' + RAMP.map(function (c) { return css(c, 1); }).join(',') + ')';
        legend.appendChild(scale);
        legend.appendChild(make('span', {}, isFinite(hi) ? String(+hi.toPrecision(3)) : '-'));
      } else {
        var cats = [], index = new Map();
        for (var m = 0; m < N; m++) {
          var s = missing(v[m]) ? '(missing)' : String(v[m]);
          if (!index.has(s)) { index.set(s, cats.length); cats.push(s); }
          colors[m] = s === '(missing)' ? [190, 190, 190] : PALETTE[index.get(s) % PALETTE.length];
        }
        cats.slice(0, 20).forEach(function (s) {
          var c = s === '(missing)' ? [190, 190, 190] : PALETTE[index.get(s) % PALETTE.length];
          var chip = make('span', { class: 'map-chip', 'data-value': s }, s);
          chip.style.borderLeft = '10px solid ' + css(c, 1);
          legend.appendChild(chip);
        });
        if (cats.length > 20) legend.appendChild(make('span', { class: 'muted' }, '+' + (cats.length - 20) + ' more'));
      }
    }

    // The points are painted into an ImageData once per change of colours, fades, selection or width (about 10 ms
    // for 100,000 points; fillRect per point took ~150 ms), then put back under the selection path while dragging.
    var layer = null, stale = true;
    function paintPoints() {
      var W = canvas.width, H = canvas.height, image = ctx.createImageData(W, H);
      var buf = new Uint32Array(image.data.buffer), half = N > 20000 ? 1 : N > 2000 ? 2 : 3;
      buf.fill(0xffffffff);   // opaque white (ImageData is RGBA in memory: little-endian ABGR words)
      function pack(c, alpha) {   // the colour blended onto white at alpha, as one ABGR word
        var r = 255 + (c[0] - 255) * alpha, g = 255 + (c[1] - 255) * alpha, b = 255 + (c[2] - 255) * alpha;
        return ((255 << 24) | (Math.round(b) << 16) | (Math.round(g) << 8) | Math.round(r)) >>> 0;
      }
      for (var pass = 0; pass < 2; pass++) {   // faded points first, so the active ones stay on top
        for (var i = 0; i < N; i++) {
          if (missing(X[i]) || missing(Y[i])) continue;
          var on = (!active || active[i]) && (!selected || selected.has(i));
          if ((pass === 1) !== on) continue;
          var word = pack(colors[i] || PALETTE[0], on ? 0.85 : 0.12);
          var px = Math.round(sx(X[i])), py = Math.round(sy(Y[i]));
          for (var y = Math.max(0, py - half); y < Math.min(H, py + half); y++) {
            for (var x = Math.max(0, px - half); x < Math.min(W, px + half); x++) buf[y * W + x] = word;
          }
        }
      }
      layer = image;
      stale = false;
    }
    function draw() {
      var w = Math.max(100, Math.round(canvas.clientWidth || 600));
      if (canvas.width !== w) { canvas.width = w; stale = true; }
      if (stale || !layer) paintPoints();
      ctx.putImageData(layer, 0, 0);
      if (path && path.length > 1) {
        ctx.strokeStyle = '#111'; ctx.setLineDash([4, 3]); ctx.beginPath();
        ctx.moveTo(path[0][0], path[0][1]);
        path.forEach(function (p) { ctx.lineTo(p[0], p[1]); });
        ctx.closePath(); ctx.stroke(); ctx.setLineDash([]);
      }
      info.textContent = selected ? selected.size + ' of ' + N + ' points selected' : N + ' points: drag to select';
      clear.disabled = !selected;
    }

    function at(ev) {
      var b = canvas.getBoundingClientRect();
      return [(ev.clientX - b.left) * canvas.width / b.width, (ev.clientY - b.top) * canvas.height / b.height];
    }
    function finish() {
      var poly = path;
      path = null;
      if (!poly || poly.length < 3) { draw(); return; }
      var hit = new Set();
      for (var i = 0; i < N; i++) {
        if (!missing(X[i]) && !missing(Y[i]) && inside(sx(X[i]), sy(Y[i]), poly)) hit.add(i);
      }
      api.select(hit.size ? hit : null);   // a lasso around nothing clears, like a click on empty space
    }
    canvas.addEventListener('pointerdown', function (ev) {
      canvas.setPointerCapture && canvas.setPointerCapture(ev.pointerId);
      var p = at(ev);
      path = modeSel.value === 'box' ? [p, p, p, p] : [p];
    });
    canvas.addEventListener('pointermove', function (ev) {
      if (!path) return;
      var p = at(ev);
      if (modeSel.value === 'box') { var a = path[0]; path = [a, [p[0], a[1]], p, [a[0], p[1]]]; } else path.push(p);
      draw();
    });
    canvas.addEventListener('pointerup', finish);
    canvas.addEventListener('pointercancel', function () { path = null; draw(); });
    colorSel.addEventListener('change', function () { colourBy(colorSel.value); stale = true; draw(); });
    clear.addEventListener('click', function () { api.select(null); });
    if (root.addEventListener) root.addEventListener('resize', function () { draw(); });

    var api = {
      setActive: function (mask) {
        if (mask === active || (!mask && !active)) return;   // refreshes that change nothing cost no repaint
        active = mask; stale = true; draw();
      },
      select: function (indices, quiet) {
        selected = indices && indices.size !== undefined ? indices : indices ? new Set(indices) : null;
        stale = true;
        draw();
        if (opts.onSelect && !quiet) opts.onSelect(selected);
      },
      selection: function () { return selected; },
      redraw: draw,
    };
    var start = opts.color && columns.some(function (c) { return c.name === opts.color; }) ? opts.color
      : columns.length ? columns[0].name : '';
    colorSel.value = start;
    colourBy(start);
    draw();
    return api;
  }
  root.MasklabMap = MasklabMap;
})(typeof window !== 'undefined' ? window : this);

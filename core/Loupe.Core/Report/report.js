// Loupe report: paged galleries, the methods × images grid and interactive scatters, all from the inline JSON.
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('loupe-data').textContent);
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
    for (const k of kids) e.append(k);
    return e;
  };
  const thumbIndex = new Map();
  if (D.thumbs) D.thumbs.ids.forEach((id, i) => thumbIndex.set(id, i));
  const labelName = l => (l === null || l === undefined) ? '' : (D.labels[l] !== undefined ? D.labels[l] : String(l));

  // A thumbnail from the sprite sheets (only fetched when shown), or null when the run has none for this id.
  function thumb(id, px) {
    if (!D.thumbs || !thumbIndex.has(id)) return null;
    const t = D.thumbs, i = thumbIndex.get(id), sheet = Math.floor(i / t.perSheet), j = i % t.perSheet;
    const s = px / t.size, col = j % t.columns, row = Math.floor(j / t.columns);
    const rows = Math.ceil(Math.min(t.perSheet, t.ids.length - sheet * t.perSheet) / t.columns);
    const d = el('span', { class: 'thumb', title: id });
    Object.assign(d.style, {
      width: px + 'px', height: px + 'px', backgroundImage: `url("${t.sheets[sheet]}")`,
      backgroundSize: `${t.columns * t.size * s}px ${rows * t.size * s}px`,
      backgroundPosition: `-${col * t.size * s}px -${row * t.size * s}px`,
    });
    return d;
  }
  const img = (path, alt) => path ? el('a', { href: path, target: '_blank' }, el('img', { src: path, alt: alt, loading: 'lazy' })) : el('span', { class: 'muted' }, '—');

  // Paging: renders page p of items with render(item) into host.
  function paged(host, items, pageSize, render) {
    const body = el('div'), info = el('span');
    const prev = el('button', { type: 'button' }, '‹ previous'), next = el('button', { type: 'button' }, 'next ›');
    const pages = Math.max(1, Math.ceil(items.length / pageSize));
    let page = 0;
    const show = () => {
      body.replaceChildren(render(items.slice(page * pageSize, (page + 1) * pageSize)));
      info.textContent = `page ${page + 1} of ${pages} (${items.length} inputs)`;
      prev.disabled = page === 0; next.disabled = page === pages - 1;
    };
    prev.onclick = () => { page--; show(); }; next.onclick = () => { page++; show(); };
    host.append(body);
    if (pages > 1) host.append(el('div', { class: 'pager' }, prev, info, next));
    show();
  }

  for (const host of document.querySelectorAll('[data-gallery]')) {
    const g = D.galleries[host.dataset.gallery];
    paged(host, g.items, 24, page => {
      const cards = el('div', { class: 'cards' });
      for (const [id, paths] of page) {
        const card = el('figure', { class: 'card', 'data-input': id });
        paths.forEach((p, k) => p && card.append(img(p, `${id} ${g.names[k]}`)));
        card.append(el('figcaption', {}, id));
        cards.append(card);
      }
      return cards;
    });
  }

  const gridHost = document.querySelector('[data-grid]');
  if (gridHost && D.grid) {
    paged(gridHost, D.grid.rows, 12, page => {
      const head = el('tr', {}, el('th', {}, 'input'), ...D.grid.columns.map(c => el('th', {}, `${c.step} · ${c.name}`)));
      const table = el('table', { class: 'grid' }, el('thead', {}, head));
      const tbody = el('tbody');
      for (const [id, paths] of page)
        tbody.append(el('tr', { 'data-input': id }, el('td', {}, thumb(id, 56) || '', el('div', { class: 'muted' }, id),
            ...((D.grid.predictions || {})[id] || []).map(line => el('div', { class: 'pred' }, line))),
          ...paths.map((p, k) => el('td', {}, img(p, `${id} ${D.grid.columns[k].step}`)))));
      table.append(tbody);
      return table;
    });
  }

  // Lightbox: the input enlarged and every per-input image of it in this run.
  const lightbox = document.getElementById('lightbox');
  function open(id, label) {
    const box = el('div', { class: 'box' }, el('h3', {}, `${id}${label !== '' ? ' — ' + label : ''}`));
    const t = thumb(id, 160);
    if (t) box.append(t);
    for (const [step, name, path] of (D.inputs[id] || []))
      box.append(el('figure', {}, img(path, `${id} ${step}`), el('figcaption', {}, `${step} · ${name}`)));
    box.append(el('p', { class: 'muted' }, 'click or press Escape to close'));
    lightbox.replaceChildren(box);
    lightbox.hidden = false;
  }
  lightbox.onclick = () => { lightbox.hidden = true; };
  document.addEventListener('keydown', e => { if (e.key === 'Escape') lightbox.hidden = true; });

  // Interactive scatter: canvas points coloured by label; hover → thumbnail, label and id; click → lightbox.
  window.loupe = { scatters: [] };
  for (const host of document.querySelectorAll('[data-scatter]')) {
    const s = D.scatters[+host.dataset.scatter], n = s.x.length;
    const canvas = el('canvas', { 'data-points': n }), overlay = el('canvas', { class: 'overlay' }), tip = el('div', { class: 'tip', hidden: '' });
    host.append(canvas, overlay, tip);
    const labels = [...new Set(s.labels || [])].sort((a, b) => a - b);
    if (labels.length) host.after(el('div', { class: 'legend' }, ...labels.map(l => el('span', {}, el('i', { style: `background:${PALETTE[l % 10]}` }), labelName(l)))));
    let sx = new Float32Array(n), sy = new Float32Array(n), hover = -1;
    const M = 36;
    function layout() {
      const w = host.clientWidth || 800, h = Math.round(w * 0.7), dpr = window.devicePixelRatio || 1;
      for (const c of [canvas, overlay]) { c.width = w * dpr; c.height = h * dpr; c.style.height = h + 'px'; c.style.width = w + 'px'; }
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (let i = 0; i < n; i++) { x0 = Math.min(x0, s.x[i]); x1 = Math.max(x1, s.x[i]); y0 = Math.min(y0, s.y[i]); y1 = Math.max(y1, s.y[i]); }
      const kx = (w - 2 * M) / Math.max(x1 - x0, 1e-12), ky = (h - 2 * M) / Math.max(y1 - y0, 1e-12);
      for (let i = 0; i < n; i++) { sx[i] = M + (s.x[i] - x0) * kx; sy[i] = h - M - (s.y[i] - y0) * ky; }
      const g = canvas.getContext('2d');
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.fillStyle = '#fff'; g.fillRect(0, 0, w, h);
      g.fillStyle = '#5c6370'; g.font = '12px system-ui, sans-serif';
      g.fillText(s.xLabel, w / 2 - g.measureText(s.xLabel).width / 2, h - 10);
      g.save(); g.translate(14, h / 2 + g.measureText(s.yLabel).width / 2); g.rotate(-Math.PI / 2); g.fillText(s.yLabel, 0, 0); g.restore();
      const r = n > 3000 ? 1.6 : n > 1000 ? 2.2 : 3;
      g.globalAlpha = 0.8;
      for (let i = 0; i < n; i++) {
        g.fillStyle = s.labels ? PALETTE[s.labels[i] % 10] : PALETTE[0];
        g.beginPath(); g.arc(sx[i], sy[i], r, 0, 2 * Math.PI); g.fill();
      }
      overlay.getContext('2d').setTransform(dpr, 0, 0, dpr, 0, 0);
    }
    function nearest(x, y) {
      let best = -1, bd = 64;
      for (let i = 0; i < n; i++) { const dx = sx[i] - x, dy = sy[i] - y, d = dx * dx + dy * dy; if (d < bd) { bd = d; best = i; } }
      return best;
    }
    function highlight(i, x, y) {
      const g = overlay.getContext('2d');
      g.clearRect(0, 0, overlay.width, overlay.height);
      hover = i;
      if (i < 0) { tip.hidden = true; return; }
      g.strokeStyle = '#000'; g.lineWidth = 2; g.beginPath(); g.arc(sx[i], sy[i], 6, 0, 2 * Math.PI); g.stroke();
      const label = s.labels ? labelName(s.labels[i]) : '';
      tip.replaceChildren(...[thumb(s.ids[i], 64)].filter(Boolean), el('div', {}, label), el('div', { class: 'muted' }, s.ids[i]));
      tip.hidden = false;
      tip.style.left = Math.min(x + 14, host.clientWidth - 90) + 'px'; tip.style.top = (y + 14) + 'px';
    }
    const pos = e => { const b = canvas.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
    canvas.addEventListener('mousemove', e => { const [x, y] = pos(e); highlight(nearest(x, y), x, y); });
    canvas.addEventListener('mouseleave', () => highlight(-1));
    canvas.addEventListener('click', e => { const [x, y] = pos(e), i = nearest(x, y); if (i >= 0) open(s.ids[i], s.labels ? labelName(s.labels[i]) : ''); });
    let timer = 0;
    window.addEventListener('resize', () => { clearTimeout(timer); timer = setTimeout(layout, 150); });
    layout();
    // For tests and tools: where point i is drawn, relative to the page.
    window.loupe.scatters.push({ step: s.step, count: n, position: i => { const b = canvas.getBoundingClientRect(); return [b.left + window.scrollX + sx[i], b.top + window.scrollY + sy[i]]; }, hovered: () => hover });
  }
  document.body.dataset.ready = '1';
})();

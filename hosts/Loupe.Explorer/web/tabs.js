// Layers, Dataset and Runs tabs (app.js holds the shared helpers: api, el, $, runJob, progressView, select).
let tab = 'explain';

for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));

function showTab(name) {
  tab = name;
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === name);
  for (const t of document.querySelectorAll('main > .tab')) t.hidden = t.id !== `tab-${name}`;
  if (name === 'layers') showLayer();
  if (name === 'runs') listRuns();
}

const spatialLayers = () => info.layers.filter(l => l.shape && l.shape.length === 4);
const pooledLayers = () => info.layers.filter(l => l.shape && l.shape.length >= 2);

window.addEventListener('loupe-info', () => {
  const opt = l => el('option', { value: l.name, textContent: `${l.name} (${l.kind}, ${l.shape.join('×')})` });
  $('layers-layer').replaceChildren(...spatialLayers().map(opt));
  $('patch-layer').replaceChildren(...spatialLayers().map(opt));
  $('dataset-layer').replaceChildren(...pooledLayers().map(opt));
  // Default: the last layer with a spatial map larger than 1×1 (as the Explain tab's layer).
  const spatial = spatialLayers().filter(l => l.shape[2] > 1 && l.shape[3] > 1);
  if (spatial.length) $('layers-layer').value = $('patch-layer').value = spatial[spatial.length - 1].name;
  const pooled = pooledLayers();
  // Default map layer: the last layer before the classifier output (the embedding), else the last spatial one.
  if (pooled.length > 1) $('dataset-layer').value = pooled[pooled.length - 2].name;
  channelRange();
});
window.addEventListener('loupe-select', () => { if (tab === 'layers') showLayer(); });

// ---- Layers: the filters of a layer, its activation maps for the current input, a channel browser with a threshold.
let layersBusy = null;

function channelRange() {
  const l = info.layers.find(x => x.name === $('layers-layer').value);
  const channels = l ? l.shape[1] : 1;
  $('channel').max = $('channel-number').max = channels - 1;
  if (+$('channel').value > channels - 1) $('channel').value = $('channel-number').value = 0;
  $('layers-shape').textContent = l ? `output ${l.shape.join('×')}: ${channels} channels` : '';
}

function threshold() {
  const mode = $('threshold-mode').value, v = parseFloat($('threshold').value);
  if (mode === 'value') return { mode, value: v };
  if (mode === 'quantile') return { mode, quantile: v };
  return { mode: 'none' };
}

async function layerCard(target, technique, options, signal) {
  const job = await runJob('/api/jobs', { input: current, technique, options }, progressView(target), signal);
  if (signal.aborted) return;
  const x = job.result || {};
  const parts = [];
  if (x.png) parts.push(el('img', { src: 'data:image/png;base64,' + x.png, className: 'map' }));
  if (x.min !== undefined && x.min !== null) parts.push(el('div', { className: 'muted', textContent: `min ${x.min.toPrecision(3)}, max ${x.max.toPrecision(3)}` }));
  if (job.error) parts.push(el('div', { className: 'error', textContent: job.error }));
  target.replaceChildren(...parts);
}

async function showLayer() {
  if (!info) return;
  if (layersBusy) layersBusy.abort();
  const controller = layersBusy = new AbortController();
  const layer = $('layers-layer').value, channel = +$('channel').value, t = threshold();
  $('layers-status').textContent = `input ${current}, ${layer}, channel ${channel}…`;
  await layerCard($('layers-channel'), 'activations', { layer, channels: [channel], threshold: t }, controller.signal);
  await layerCard($('layers-top'), 'activations', { layer, top: 8, threshold: t }, controller.signal);
  await layerCard($('layers-filters'), 'filters', { layer }, controller.signal);
  if (layersBusy === controller) $('layers-status').textContent = 'done';
}

$('layers-layer').addEventListener('change', () => { channelRange(); showLayer(); });
$('channel').addEventListener('input', () => { $('channel-number').value = $('channel').value; });
$('channel').addEventListener('change', showLayer);
$('channel-number').addEventListener('change', () => { $('channel').value = $('channel-number').value; showLayer(); });
$('threshold-mode').addEventListener('change', showLayer);
$('threshold').addEventListener('change', showLayer);

// ---- Dataset: the embedding map with thumbnails; click a point → that input and its nearest neighbours.
let mapPoints = [];

$('dataset-go').addEventListener('click', async () => {
  const body = { layer: $('dataset-layer').value, method: $('dataset-method').value };
  const job = await runJob('/api/dataset/map', body, progressView($('dataset-status'), `${body.method} of ${body.layer}`));
  if (job.state !== 'done') { $('dataset-status').replaceChildren(el('div', { className: 'error', textContent: job.error || job.state })); return; }
  mapPoints = job.result.points;
  const xs = mapPoints.map(p => p.x), ys = mapPoints.map(p => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const at = (v, lo, hi) => 16 + 488 * (hi > lo ? (v - lo) / (hi - lo) : 0.5);
  $('map').replaceChildren(...mapPoints.map(p => {
    const img = el('img', { src: `/api/inputs/${p.index}.png?token=${token}`, title: `${p.id}: predicted ${p.name}`, className: 'point' });
    img.dataset.index = p.index;
    img.style.left = `${at(p.x, x0, x1)}px`;
    img.style.top = `${520 - at(p.y, y0, y1)}px`;
    img.addEventListener('click', () => neighbours(p.index));
    return img;
  }));
  $('dataset-status').textContent = `${job.result.method} of ${job.result.layer}: ${mapPoints.length} inputs (thumbnails at their coordinates)`;
});

async function neighbours(index) {
  for (const img of document.querySelectorAll('#map img')) img.classList.toggle('selected', +img.dataset.index === index);
  select(index);
  $('neighbours-title').textContent = `input ${index} and its nearest neighbours`;
  const job = await runJob('/api/dataset/neighbours', { input: index, layer: $('dataset-layer').value }, progressView($('neighbours')));
  if (job.state !== 'done') { $('neighbours').replaceChildren(el('div', { className: 'error', textContent: job.error || job.state })); return; }
  const tile = (i, caption) => el('img', { src: `/api/inputs/${i}.png?token=${token}`, title: caption, className: 'neighbour' });
  $('neighbours').replaceChildren(tile(index, `input ${index}`),
    ...job.result.neighbours.map(n => { const t = tile(n.index, `input ${n.index}, distance ${n.distance.toPrecision(3)}`); t.dataset.index = n.index; return t; }));
}

$('patches-go').addEventListener('click', async () => {
  const body = { layer: $('patch-layer').value, channel: +$('patch-channel').value };
  const job = await runJob('/api/dataset/patches', body, progressView($('patches'), `channel ${body.channel} of ${body.layer}`));
  if (job.state !== 'done') { $('patches').replaceChildren(el('div', { className: 'error', textContent: job.error || job.state })); return; }
  $('patches').replaceChildren(el('img', { src: 'data:image/png;base64,' + job.result.png, className: 'patches', title: `inputs ${job.result.inputs.join(', ')}` }));
});

// ---- Runs: the run folders under the allowed roots; open one's report, compare two.
async function listRuns() {
  const r = await (await api('/api/runs')).json();
  $('runs-roots').textContent = `run folders under ${r.roots.join(', ')}`;
  $('runs').tBodies[0].replaceChildren(...r.runs.map((x, i) => {
    const link = el('a', { textContent: x.name, className: 'open-run' });
    link.dataset.name = x.name;
    link.addEventListener('click', () => { $('run-frame').src = x.url; });
    const radio = side => { const b = el('input', { type: 'radio', name: `run-${side}`, value: x.name, checked: side === 'a' ? i === 0 : i === 1 }); b.dataset.root = x.root; return b; };
    return el('tr', {}, el('td', {}, radio('a')), el('td', {}, radio('b')), el('td', {}, link), el('td', { textContent: x.error ? 'unreadable' : x.status }));
  }));
}

$('compare').addEventListener('click', async () => {
  const a = document.querySelector('input[name=run-a]:checked'), b = document.querySelector('input[name=run-b]:checked');
  if (!a || !b) { $('runs-status').textContent = 'pick a run A and a run B'; return; }
  const r = await api('/api/runs/compare', { method: 'POST', body: JSON.stringify({ root: +a.dataset.root, a: a.value, b: b.value }), headers: { 'Content-Type': 'application/json' } });
  const x = await r.json();
  $('runs-status').textContent = r.ok ? '' : x.error;
  if (r.ok) $('run-frame').src = x.url;
});

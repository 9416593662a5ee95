// Loupe explorer: every request carries the token from the page URL.
const token = new URLSearchParams(location.search).get('token') || '';
const api = (path, init = {}) => fetch(path, { ...init, headers: { ...(init.headers || {}), 'X-Loupe-Token': token } });
const $ = id => document.getElementById(id);
let info = null, current = 0, busy = null;
const schemas = {};

function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
}

async function load() {
  info = await (await api('/api/info')).json();
  $('model').textContent = `${info.input.channels}×${info.input.height}×${info.input.width} input, ${info.layers.length} layers, ${info.labels.length} labels`;
  for (const l of info.layers) $('layer').append(el('option', { value: l.name, textContent: `${l.name} (${l.kind}${l.shape ? ', ' + l.shape.join('×') : ''})` }));
  // Default: the last spatial (N×C×H×W, larger than 1×1) layer, where CAMs are usually taken.
  const spatial = info.layers.filter(l => l.shape && l.shape.length === 4 && l.shape[2] > 1 && l.shape[3] > 1);
  if (spatial.length) $('layer').value = spatial[spatial.length - 1].name;
  $('target').append(el('option', { value: '"top-1"', textContent: 'top-1 class' }));
  info.labels.forEach((name, i) => $('target').append(el('option', { value: JSON.stringify({ class: i }), textContent: `class ${i}: ${name}` })));
  const defaults = ['saliency', 'grad-cam', 'occlusion'];
  for (const t of info.techniques) {
    const box = el('input', { type: 'checkbox', value: t.id, checked: defaults.includes(t.id), className: 'technique' });
    box.addEventListener('change', renderOptions);
    $('techniques').append(el('label', { title: t.description }, box, ' ' + t.id));
  }
  renderInputs(info.inputs);
  await renderOptions();
  await select(0);
  window.dispatchEvent(new Event('loupe-info'));
}

function renderInputs(inputs) {
  $('inputs').replaceChildren(...inputs.map(x => {
    const img = el('img', { src: `/api/inputs/${x.index}.png?token=${token}`, title: x.id, alt: x.id, className: 'input' });
    img.dataset.index = x.index;
    img.addEventListener('click', () => select(x.index));
    return img;
  }));
}

async function select(index) {
  current = index;
  window.dispatchEvent(new CustomEvent('loupe-select', { detail: index }));
  for (const img of document.querySelectorAll('#inputs img')) img.classList.toggle('selected', +img.dataset.index === index);
  $('current').textContent = `input ${index}`;
  const r = await api(`/api/predict/${index}?k=5`);
  const top = r.ok ? await r.json() : [];
  $('predictions').replaceChildren(...top.map(p => el('li', { textContent: `${p.label} ${(100 * p.probability).toFixed(1)} %` })));
  await explain();
}

const chosen = () => [...document.querySelectorAll('input.technique:checked')].map(b => b.value);

async function renderOptions() {
  // The options form comes from each plugin's option schema (as 'loupe describe' lists it): no UI code per technique.
  const sets = [];
  for (const id of chosen()) {
    const d = schemas[id] ??= await (await api(`/api/techniques/${encodeURIComponent(id)}`)).json();
    const fields = d.options.filter(o => o.name !== 'layer').map(o => el('label', { title: o.description || '' },
      `${o.name} `, el('input', { name: o.name, placeholder: o.default ?? '', className: 'option' })));
    sets.push(el('fieldset', { id: `opts-${id}` }, el('legend', { textContent: id }), ...fields));
  }
  $('options').replaceChildren(...sets);
}

function optionsOf(id) {
  const o = {};
  const layer = $('layer').value;
  for (const input of document.querySelectorAll(`#opts-${CSS.escape(id)} input.option`)) {
    if (input.value.trim() === '') continue;
    try { o[input.name] = JSON.parse(input.value); } catch { o[input.name] = input.value; }
  }
  if (layer && schemas[id]?.options.some(x => x.name === 'layer')) o.layer = layer;
  return o;
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

// A computation on the server: started with POST, polled until it ends; `view` shows its progress and offers Cancel
// (DELETE stops the technique through its cancellation token). Aborting `signal` cancels it too.
async function runJob(url, body, view, signal) {
  const r = await api(url, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
  let job = await r.json();
  if (!r.ok) return { state: 'failed', error: job.error || r.statusText };
  let cancelled = false;
  const cancel = () => { if (!cancelled) { cancelled = true; api(`/api/jobs/${job.id}`, { method: 'DELETE' }); } };
  signal?.addEventListener('abort', cancel);
  while (job.state === 'running') {
    view?.(job, cancel);
    await sleep(120);
    const p = await api(`/api/jobs/${job.id}`);
    if (!p.ok) return { state: 'failed', error: `job ${job.id}: ${p.status}` };
    job = await p.json();
  }
  signal?.removeEventListener('abort', cancel);
  return job;
}

// Progress bar, message and a Cancel button inside an element.
function progressView(target, title) {
  let bar = null, text = null;
  return (job, cancel) => {
    if (!bar) {
      bar = el('progress', { max: 1, value: 0, className: 'job-progress' });
      text = el('div', { className: 'muted job-message' });
      target.replaceChildren(...(title ? [el('b', { textContent: title })] : []), bar, text,
        el('button', { textContent: 'Cancel', className: 'cancel', onclick: cancel }));
    }
    bar.value = job.progress;
    text.textContent = `${job.message || 'running'} · ${job.seconds.toFixed(1)} s`;
  };
}

async function explain() {
  if (busy) busy.abort();
  const controller = busy = new AbortController();
  const ids = chosen();
  $('status').textContent = `computing ${ids.length} map(s)…`;
  const cards = ids.map(id => el('div', { className: 'card', id: `card-${id}` }, el('b', { textContent: id }), el('div', { textContent: '…' })));
  $('results').replaceChildren(...cards);
  await Promise.all(ids.map(async (id, i) => {
    const body = { input: current, technique: id, options: optionsOf(id), target: JSON.parse($('target').value) };
    try {
      const job = await runJob('/api/jobs', body, progressView(cards[i], id), controller.signal);
      if (busy !== controller) return;
      const x = job.result || {};
      const parts = [el('b', { textContent: `${id}${x.target ? ' · ' + x.target : ''}` })];
      if (x.png) parts.push(el('img', { src: 'data:image/png;base64,' + x.png, className: 'map' }), el('div', { textContent: `min ${x.min?.toPrecision(3)}, max ${x.max?.toPrecision(3)}, ${x.milliseconds.toFixed(0)} ms` }));
      if (job.state === 'cancelled') parts.push(el('div', { className: 'error cancelled', textContent: 'cancelled' }));
      else if (job.error) parts.push(el('div', { className: 'error', textContent: job.error }));
      cards[i].replaceChildren(...parts);
    } catch (e) { cards[i].replaceChildren(el('b', { textContent: id }), el('div', { className: 'error', textContent: String(e) })); }
  }));
  if (busy === controller) $('status').textContent = 'done';
}

$('explain').addEventListener('click', explain);
$('target').addEventListener('change', explain);
$('layer').addEventListener('change', explain);
$('upload').addEventListener('change', async e => {
  const file = e.target.files[0];
  if (!file) return;
  const r = await api('/api/upload', { method: 'POST', body: await file.arrayBuffer() });
  const x = await r.json();
  $('upload-error').textContent = r.ok ? '' : x.error;
  if (r.ok) { renderInputs(x.inputs); await select(x.index); }
});
load();

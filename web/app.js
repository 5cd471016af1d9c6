// app.js: gplq's dashboard, one page over gplqd's REST API (/v1/openapi.json).
//
// Views, chosen by the URL's hash: sign-in, #/jobs (the table, live), #/new (upload and
// submit), #/jobs/ID (one job: timeline, loss curves, accuracies, QwT diagnostics, artifacts,
// webhook log), #/uploads (models and datasets, to delete). Each view renders into <main> and
// returns a function that stops what it started (event streams, timers), called when the user
// leaves it.
//
// Live updates come from GET /v1/jobs/{id}/events, read with fetch() rather than EventSource,
// because EventSource cannot send the Authorization header and the token must not go into
// URLs (they end up in logs and history). DOM is built with h() from text and nodes, never from
// HTML strings, so nothing a job or a file name contains can become markup.

import {lineChart, barChart} from './charts.js';

const TOKEN_KEY = 'gplq.token';
const ENDED = new Set(['succeeded', 'failed', 'canceled']);
const MAX_TABLE_STREAMS = 4; // a browser opens at most 6 connections per host over HTTP/1.1
let jobsFilter = ''; // the jobs table's state filter ('' = every state), kept while the tab lives

// ---------------------------------------------------------------------------------------------
// Small helpers

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : String(kid));
  }
  return e;
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return '';
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, '0')} min`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const u = ['KB', 'MB', 'GB', 'TB'];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${u[i]}`;
}

const pct = v => (v === null || v === undefined) ? '' : `${(v * 100).toFixed(2)}%`;
const when = iso => iso ? new Date(iso).toLocaleString() : '';
const bits = spec => spec ? `W${spec.wbits}A${spec.abits}` : '';

function elapsed(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return (end - Date.parse(job.started_at)) / 1000;
}

let toastTimer = 0;
function toast(msg, bad) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.className = bad ? 'toast bad' : 'toast';
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 4000);
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
const authHeaders = () => ({Authorization: `Bearer ${token()}`});

function errorOf(status, text, statusText) {
  let e = {};
  try { e = (JSON.parse(text) || {}).error || {}; } catch (_) { /* not JSON: a proxy's page */ }
  return new ApiError(status, e.code || `http_${status}`, e.message || `${status} ${statusText || ''}`.trim(), e.field);
}

// One JSON request. Resolves to the parsed body (null for 204); rejects with an ApiError whose
// message is the server's own. A 401 means the token is no longer good: back to sign-in.
async function api(method, path, body, opts = {}) {
  const headers = authHeaders();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, {method, headers, signal: opts.signal,
                           body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'unreachable', 'gplqd does not answer: is it running?');
  }
  const text = await r.text();
  if (!r.ok) {
    const err = errorOf(r.status, text, r.statusText);
    if (r.status === 401 && !opts.noSignOut) signOut(`Signed out: ${err.message}`);
    throw err;
  }
  return text ? JSON.parse(text) : null;
}

// Uploads a file as the request body (what the API takes: no multipart), reporting progress;
// XMLHttpRequest because fetch() does not report upload progress.
function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open('POST', path);
    x.setRequestHeader('Authorization', `Bearer ${token()}`);
    x.setRequestHeader('Content-Type', 'application/octet-stream');
    x.upload.onprogress = e => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    x.upload.onload = () => onProgress(1);
    x.onload = () => {
      if (x.status >= 200 && x.status < 300) resolve(JSON.parse(x.responseText));
      else reject(errorOf(x.status, x.responseText, x.statusText));
    };
    x.onerror = () => reject(new ApiError(0, 'unreachable', 'the upload was cut off: is gplqd running?'));
    x.send(file);
  });
}

// Follows a job's events from event id `after` until the job ends or `signal` aborts, calling
// onEvent({id, type, data}) for each. A dropped connection is resumed after the last event
// seen (Last-Event-ID), so nothing is missed or repeated.
async function followEvents(jobId, after, onEvent, signal) {
  let last = after;
  while (!signal.aborted) {
    let ended = false;
    try {
      const r = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`, {
        headers: {...authHeaders(), 'Last-Event-ID': String(last), Accept: 'text/event-stream'},
        signal, cache: 'no-store'});
      if (r.status === 404 || r.status === 401) return;
      if (r.ok) {
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buf += dec.decode(value, {stream: true});
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const data = block.split('\n').filter(l => l.startsWith('data:'))
              .map(l => l.slice(l.startsWith('data: ') ? 6 : 5)).join('\n');
            if (!data) continue; // a keep-alive comment or the retry: line
            const ev = JSON.parse(data);
            last = ev.id;
            onEvent(ev);
            if (ev.type === 'state' && ENDED.has(ev.data.state)) ended = true;
          }
        }
      }
      // The stream closes after the job's last event; a close before it is a dropped line.
      if (ended) return;
      const job = await api('GET', `/v1/jobs/${encodeURIComponent(jobId)}`, undefined, {signal});
      if (ENDED.has(job.state)) return;
    } catch (e) {
      if (signal.aborted) return;
    }
    await sleep(2000); // the server's retry: value
  }
}

// The models and datasets the token sees, by id: names for the tables, the form's choices and
// the uploads page. Fetched anew by each view (and on a miss), replacing what was there, so a
// deleted upload does not linger in a picker.
// gone: ids jobs still name after a fresh load (deleted uploads), so they are not looked up
// again on every refresh
const names = {models: new Map(), datasets: new Map(), gone: new Set()};
async function loadNames(signal) {
  const [m, d] = await Promise.all([api('GET', '/v1/models', undefined, {signal}),
                                    api('GET', '/v1/datasets', undefined, {signal})]);
  names.models = new Map((m.models || []).map(x => [x.id, x]));
  names.datasets = new Map((d.datasets || []).map(x => [x.id, x]));
}
const modelName = id => (names.models.get(id) || {}).name || id;
// A model's architecture in one line: the server's description (the family, and a Swin's depths,
// heads and window), else, for a model stored before descriptions (a ViT), from its config.
const modelArch = (c = {}) => c.description ||
  `ViT: img ${c.img_size}, patch ${c.patch_size}, dim ${c.embed_dim}, depth ${c.depth}, ${c.num_heads} heads, ${c.num_classes} classes`;
const datasetName = id => (names.datasets.get(id) || {}).name || id;

// ---------------------------------------------------------------------------------------------
// Words for what a job is doing (progress {stage, part, step, total}, from the worker)

const PART = {fp32: 'FP32 model', stage1: 'after stage 1', stage2_noqwt: 'stage 2 without QwT',
              gplq: 'GPLQ model', ptq_baseline: 'PTQ baseline', minmax_baseline: 'min-max baseline'};

function progressText(job) {
  const p = job.progress;
  if (job.state === 'queued') return 'queued';
  if (job.state === 'succeeded') return 'done';
  if (job.state === 'canceled') return 'canceled';
  if (job.state === 'failed') return 'failed';
  if (!p) return 'starting';
  const of = p.total > 1 ? ` ${p.step}/${p.total}` : '';
  switch (p.stage) {
  case 'calibrate': return p.part === 'load' ? 'loading the model and data' : `calibrating the ${PART[p.part] || p.part}${of}`;
  case 'evaluate': return `evaluating the ${PART[p.part] || p.part}${p.total > 1 ? ` (${p.step}/${p.total} images)` : ''}`;
  case 'stage1': return p.step > 0 ? `stage 1: activation QAT, step${of}` : 'stage 1: initializing the activation steps and the PCA';
  case 'stage2': return `stage 2: weight PTQ + QwT, block${of}`;
  case 'export': return p.part === 'onnx' ? `exporting to ONNX and running it in ONNX Runtime (file ${Math.min(p.step + 1, p.total)} of ${p.total})`
                                         : 'writing the model files and checking they reload';
  default: return `${p.stage}${of}`;
  }
}

// The stage timeline of the job page: the phases in the order the pipeline runs them.
const PHASES = [
  {key: 'queued', title: 'Queued'},
  {key: 'baselines', title: 'FP32 + baselines', help: 'FP32 top-1; PTQ alone and min-max for comparison'},
  {key: 'stage1', title: 'Stage 1', help: 'activation QAT with the PCA feature-mimicking loss'},
  {key: 'stage2', title: 'Stage 2', help: 'weight PTQ with QwT compensation'},
  {key: 'export', title: 'Artifacts', help: 'quantized model, fake-quant model, report'},
];

function phaseOf(job) {
  const p = job.progress;
  if (!job.started_at) return 0;
  if (!p) return 1;
  if (p.stage === 'export') return 4;
  if (p.stage === 'stage2' || (p.stage === 'evaluate' && (p.part === 'stage2_noqwt' || p.part === 'gplq'))) return 3;
  if (p.stage === 'stage1' || (p.stage === 'evaluate' && p.part === 'stage1')) return 2;
  return 1;
}

// What to do about an error, in words: the message itself comes from the worker or the API.
function errorAdvice(msg) {
  if (/out of memory|cannot allocate|ENOMEM/i.test(msg))
    return 'The worker ran out of memory. Try a smaller batch size or fewer PCA samples, or run fewer workers on this machine.';
  const gaveUp = /gave up after \d+ attempts?/.test(msg);
  if (gaveUp && /worker .*(exited|killed|died|lost)/.test(msg))
    return 'The worker running the job stopped before it finished (killed, crashed or out of memory: gplqd\'s log says which, at the time above), and no attempts were left. Submit the job again to start over; raise "Attempts" under more options to let gplq retry by itself.';
  if (gaveUp)
    return 'The job was retried as many times as it may be and failed each time; the last attempt\'s error is above. A new job starts over.';
  if (/head/i.test(msg))
    return 'The checkpoint does not say how many attention heads it has: set "attention heads" under more options and submit again.';
  if (/dataset|image|class/i.test(msg))
    return 'Check the dataset: an image folder with one folder of images per class (train/ and val/ optional).';
  if (/lease|worker .*(died|exited|killed)/i.test(msg))
    return 'The worker running the job stopped. gplqd restarts workers; the job is retried if attempts are left.';
  return 'If the message names an option, change it and submit a new job; the full story is in gplqd\'s log.';
}

// ---------------------------------------------------------------------------------------------
// Progress bars

function progressBar(big) {
  const fill = h('div', {class: 'fill'});
  const bar = h('div', {class: big ? 'bar big' : 'bar', role: 'progressbar', 'aria-valuemin': 0,
                        'aria-valuemax': 100, 'aria-valuenow': 0}, fill);
  const label = h('div', {class: 'progress-label', 'aria-live': 'off'});
  const box = h('div', {class: 'progress-box'}, bar, label);
  box.set = job => {
    let f = job.state === 'succeeded' ? 1 : (job.progress ? job.progress.fraction || 0 : 0);
    // The row (polled) and the event stream (at most twice a second) both bring progress, and
    // an event can arrive after a newer row: within one attempt the bar never moves back.
    const attempt = `${job.id}/${job.attempts}`;
    if (box.attempt === attempt && job.state === 'running' && f < box.fraction) f = box.fraction;
    box.attempt = attempt;
    box.fraction = f;
    const v = Math.round(f * 1000) / 10;
    fill.style.width = `${v}%`;
    bar.setAttribute('aria-valuenow', v);
    bar.setAttribute('aria-valuetext', `${v}%: ${progressText(job)}`);
    bar.classList.toggle('done', job.state === 'succeeded');
    bar.classList.toggle('failed', job.state === 'failed');
    label.textContent = job.state === 'running' ? `${v.toFixed(1)}% · ${progressText(job)}` : progressText(job);
  };
  return box;
}

// ---------------------------------------------------------------------------------------------
// Sign in

function viewSignIn(main, reason) {
  const input = h('input', {id: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
                            placeholder: 'gplq_...', required: true, 'aria-describedby': 'token-help'});
  const msg = h('p', {class: 'muted small', role: 'alert'}, reason || '');
  const form = h('form', {class: 'card signin', 'aria-labelledby': 'signin-title',
    onsubmit: async e => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      try {
        await api('GET', '/v1/jobs?limit=1', undefined, {noSignOut: true});
        navigate('#/jobs');
      } catch (err) {
        sessionStorage.removeItem(TOKEN_KEY);
        msg.textContent = err.status === 401 ? `This token was refused: ${err.message}` : err.message;
      }
    }},
    h('h1', {id: 'signin-title'}, 'Sign in'),
    h('label', {for: 'token'}, 'API token'),
    input,
    h('p', {id: 'token-help', class: 'muted small'},
      'gplqd prints an admin token the first time it starts on a data directory; ',
      h('code', {}, 'gplqd token create --name NAME'), ' makes more. ',
      'The token stays in this tab only (session storage) and is forgotten when the tab closes.'),
    h('button', {type: 'submit', class: 'primary'}, 'Sign in'),
    msg);
  main.replaceChildren(form);
  input.focus();
  return () => {};
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  signInReason = reason;
  navigate('#/');
}

// ---------------------------------------------------------------------------------------------
// Jobs

// A button that asks `question`, then sends method path; says `done` or the server's refusal.
function actionButton(text, label, cls, question, method, path, done, after) {
  return h('button', {type: 'button', class: cls, 'aria-label': label,
    onclick: async () => {
      if (!confirm(question)) return;
      try { await api(method, path); toast(done); after(); }
      catch (e) { toast(e.message, true); }
    }}, text);
}

function jobActions(job, after) {
  return ENDED.has(job.state)
    ? [actionButton('Delete', `Delete job ${job.id}`, 'small',
                    `Delete job ${job.id} with its artifacts, events and webhook log?`,
                    'DELETE', `/v1/jobs/${job.id}`, `Deleted ${job.id}`, () => after(true))]
    : [actionButton('Cancel', `Cancel job ${job.id}`, 'small danger',
                    `Cancel job ${job.id}? Its work so far is lost.`,
                    'POST', `/v1/jobs/${job.id}/cancel`, `Canceling ${job.id}`, () => after(false))];
}

function viewJobs(main) {
  const stop = new AbortController();
  const rows = new Map(); // job id -> {tr, job, bar, cells, stream}
  const tbody = h('tbody');
  const empty = h('p', {class: 'muted', hidden: true}, 'No jobs yet. ',
                  h('a', {href: '#/new'}, 'Submit one'), ' or use the API (see the README).');
  const more = h('button', {type: 'button', hidden: true, onclick: () => refresh(true)}, 'Older jobs');
  let cursor = null, firstPage = true, streams = 0;
  const filter = h('select', {id: 'jobs-filter', 'aria-label': 'Show jobs in state'},
    [['', 'All states'], ['queued', 'Queued'], ['running', 'Running'], ['succeeded', 'Succeeded'],
     ['failed', 'Failed'], ['canceled', 'Canceled']].map(([v, t]) => h('option', {value: v}, t)));
  filter.value = jobsFilter;
  filter.addEventListener('change', () => {
    jobsFilter = filter.value;
    [...rows.keys()].forEach(drop);
    cursor = null;
    firstPage = true;
    refresh();
  });
  main.replaceChildren(
    h('h1', {}, 'Jobs', h('a', {href: '#/new', class: 'button primary', role: 'button'}, 'New job'), filter),
    h('div', {class: 'card table-wrap'},
      h('table', {class: 'jobs', 'aria-label': 'Jobs, newest first'},
        h('thead', {}, h('tr', {},
          h('th', {scope: 'col'}, 'Job'), h('th', {scope: 'col'}, 'State'), h('th', {scope: 'col'}, 'Model'),
          h('th', {scope: 'col'}, 'Dataset'), h('th', {scope: 'col'}, 'Bits'), h('th', {scope: 'col'}, 'Progress'),
          h('th', {scope: 'col', class: 'num'}, 'Elapsed'), h('th', {scope: 'col', class: 'num'}, 'ETA'),
          h('th', {scope: 'col'}, h('span', {class: 'sr-only'}, 'Actions')))),
        tbody),
      empty, more));

  function paint(r) {
    const j = r.job;
    if (jobsFilter && j.state !== jobsFilter) return drop(j.id); // it moved on: out of this view
    r.cells.state.replaceChildren(h('span', {class: `state ${j.state}`}, j.state));
    r.bar.set(j);
    r.cells.elapsed.textContent = duration(elapsed(j));
    r.cells.eta.textContent = j.state === 'running' && j.progress ? duration(j.progress.eta_s) : '';
    if (r.actionsFor !== j.state) { // a rebuilt button would lose a click in flight, and focus
      r.actionsFor = j.state;
      r.cells.actions.replaceChildren(...jobActions(j, gone => gone ? drop(j.id) : refresh()));
    }
  }

  function drop(id) {
    const r = rows.get(id);
    if (!r) return;
    if (r.stream) r.stream.abort();
    r.tr.remove();
    rows.delete(id);
    showEmpty();
  }

  function upsert(job, append) {
    let r = rows.get(job.id);
    if (!r) {
      const cells = {state: h('td'), elapsed: h('td', {class: 'num'}), eta: h('td', {class: 'num'}), actions: h('td')};
      const bar = progressBar(false);
      const tr = h('tr', {'data-job': job.id},
        h('td', {}, h('a', {href: `#/jobs/${job.id}`, class: 'mono'}, job.id)),
        cells.state, h('td', {}, modelName(job.model_id)), h('td', {}, datasetName(job.dataset_id)),
        h('td', {}, bits(job.spec)), h('td', {class: 'progress'}, bar), cells.elapsed, cells.eta, cells.actions);
      r = {tr, job, bar, cells, stream: null};
      rows.set(job.id, r);
      if (append) tbody.append(tr); else tbody.prepend(tr);
    }
    r.job = job;
    paint(r);
    if (!rows.has(job.id)) return;
    // Live progress for the first few active jobs; the list refresh covers the others.
    if (!ENDED.has(job.state) && !r.stream && streams < MAX_TABLE_STREAMS) {
      r.stream = new AbortController();
      streams++;
      // From the job's newest event on (no history to replay); a state change is read from
      // the job itself, which also carries what the event does not (metrics, error).
      followEvents(job.id, job.last_event_id || 0, ev => {
        if (ev.type !== 'progress') return reload(r);
        r.job = {...r.job, progress: ev.data, stage: ev.data.stage};
        paint(r);
      }, r.stream.signal).finally(() => { streams--; r.stream = null; });
    }
    showEmpty();
  }

  // The row's job as it is now; one request at a time, repeated once if asked for meanwhile.
  async function reload(r) {
    if (r.reloading) return void (r.again = true);
    r.reloading = true;
    try {
      do {
        r.again = false;
        const j = await api('GET', `/v1/jobs/${r.job.id}`, undefined, {signal: stop.signal});
        if (rows.get(j.id) !== r) return; // dropped meanwhile
        r.job = j;
        paint(r);
      } while (r.again);
    } catch (e) {
      if (e.status === 404) drop(r.job.id);
      else if (e.name !== 'AbortError') toast(e.message, true);
    } finally {
      r.reloading = false;
    }
  }

  function showEmpty() {
    empty.hidden = rows.size > 0;
    empty.firstChild.textContent = jobsFilter ? `No ${jobsFilter} jobs. ` : 'No jobs yet. ';
  }

  // The newest page (every 4 s), or with older the page after the last one loaded.
  async function refresh(older) {
    try {
      const want = jobsFilter;
      let q = want ? `&state=${want}` : '';
      if (older && cursor) q += `&cursor=${encodeURIComponent(cursor)}`;
      const page = await api('GET', `/v1/jobs?limit=50${q}`, undefined, {signal: stop.signal});
      if (want !== jobsFilter) return; // the filter changed while this page was on its way
      const jobs = page.jobs || [];
      const unknown = id => !names.models.has(id) && !names.datasets.has(id) && !names.gone.has(id);
      if (jobs.some(j => unknown(j.model_id) || unknown(j.dataset_id))) {
        await loadNames(stop.signal);
        for (const j of jobs) for (const id of [j.model_id, j.dataset_id]) if (unknown(id)) names.gone.add(id);
      }
      if (older) jobs.forEach(j => upsert(j, true));
      else jobs.slice().reverse().forEach(j => upsert(j, false));
      // The newest page sets where "Older jobs" starts only once: after that the cursor is the
      // end of what was loaded, and the 4-second refresh must not wind it back.
      if (older || firstPage) {
        cursor = page.next_cursor || null;
        more.hidden = !cursor;
        firstPage = false;
      }
      showEmpty();
    } catch (e) {
      if (e.name !== 'AbortError') toast(e.message, true);
    }
  }

  refresh();
  const poll = setInterval(() => refresh(), 4000);
  const tick = setInterval(() => rows.forEach(r => { if (r.job.state === 'running') r.cells.elapsed.textContent = duration(elapsed(r.job)); }), 1000);
  return () => {
    stop.abort();
    clearInterval(poll);
    clearInterval(tick);
    rows.forEach(r => r.stream && r.stream.abort());
  };
}

// ---------------------------------------------------------------------------------------------
// New job

// The options the form shows, in groups; labels are ours, defaults, limits and descriptions come
// from the served OpenAPI document (the same option table as the CLI and the worker).
const MAIN_OPTIONS = [
  ['Bits', ['wbits', 'abits']],
  ['Stage 1: activation QAT', ['train_subset', 'epochs', 'batch_size', 'lr', 'alpha', 'pca_var', 'calib_images']],
  ['Stage 2: weight PTQ + QwT', ['qwt', 'qwt_images', 'lambda']],
  ['Evaluation', ['eval_subset', 'baselines', 'ort']],
];
const MORE_OPTIONS = ['weight_decay', 'label_smoothing', 'pca_samples', 'percentile_init', 'pad', 'hflip',
                      'bf16', 'seed', 'ckpt_every', 'num_heads', 'max_attempts', 'mpi'];
const LABELS = {
  img_size: 'Image size',
  wbits: 'Weight bits', abits: 'Activation bits', train_subset: 'Training images', eval_subset: 'Test images',
  baselines: 'Baselines (PTQ alone, min-max)', epochs: 'Epochs', batch_size: 'Batch size',
  lr: 'Learning rate', weight_decay: 'Weight decay', alpha: 'PCA loss weight (alpha)',
  label_smoothing: 'Label smoothing', pca_samples: 'PCA samples', pca_var: 'PCA variance kept',
  calib_images: 'Calibration images', percentile_init: 'Percentile step init', qwt_images: 'QwT images',
  qwt: 'QwT compensation', lambda: 'QwT ridge (lambda)', pad: 'Random-crop padding', hflip: 'Horizontal flips',
  bf16: 'BF16 matrix products', seed: 'Seed', ckpt_every: 'Checkpoint every (steps)', num_heads: 'Attention heads', max_attempts: 'Attempts',
  mpi: 'Across processes (MPI launcher)', ort: 'ONNX Runtime top-1',
};

let schemaCache = null;
async function jobSchema() {
  if (!schemaCache) {
    const r = await fetch('/v1/openapi.json');
    if (!r.ok) throw new ApiError(r.status, 'openapi', 'cannot read /v1/openapi.json');
    schemaCache = (await r.json()).components.schemas.JobCreate.properties;
  }
  return schemaCache;
}

// An option that takes a number or the word "auto" ({"oneOf": [{"type": "number"}, {"const": "auto"}]}).
const isAuto = s => Array.isArray(s.oneOf) && s.oneOf.some(o => o.const === 'auto');

function optionField(name, s) {
  const id = `opt-${name}`;
  const help = h('div', {class: 'help', id: `${id}-help`},
                 s.description || '', s.default !== undefined ? ` (default ${s.default})` : '');
  let input;
  if (s.type === 'boolean') {
    input = h('input', {type: 'checkbox', id, name, 'aria-describedby': `${id}-help`});
    input.checked = !!s.default;
    return h('div', {class: 'field check'}, h('label', {for: id}, input, LABELS[name] || name), help);
  }
  if (name === 'wbits' || name === 'abits') {
    input = h('select', {id, name, 'aria-describedby': `${id}-help`},
              [2, 3, 4, 5, 6, 8].map(b => h('option', {value: b, selected: b === s.default}, `${b} bits`)));
  } else if (isAuto(s)) {
    // a number, or "auto" for the value the server decides at run time (the report says which)
    input = h('input', {type: 'text', inputmode: 'decimal', id, name, 'aria-describedby': `${id}-help`,
                        placeholder: 'auto'});
    input.value = String(s.default);
  } else {
    input = h('input', {type: 'number', id, name, 'aria-describedby': `${id}-help`,
                        min: s.minimum, max: s.maximum, step: s.type === 'integer' ? 1 : 'any',
                        placeholder: String(s.default === undefined ? '' : s.default)});
    if (s.default !== undefined) input.value = s.default;
  }
  return h('div', {class: 'field'}, h('label', {for: id}, LABELS[name] || name), input, help);
}

// The spec to send: only the options that differ from their defaults, so the job's record shows
// what the user chose and the server's defaults fill the rest.
function readOptions(form, schema) {
  const spec = {};
  for (const name of [...MAIN_OPTIONS.flatMap(g => g[1]), ...MORE_OPTIONS]) {
    const s = schema[name], input = form.elements[name];
    if (!s || !input) continue;
    let v;
    if (s.type === 'boolean') v = input.checked;
    else if (input.value.trim() === '') continue;
    else if (isAuto(s) && input.value.trim() === 'auto') v = 'auto';
    else v = Number(input.value);
    if (v !== s.default) spec[name] = v;
  }
  return spec;
}

function uploadBox() {
  const bar = h('div', {class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100},
                h('div', {class: 'fill'}));
  const text = h('span');
  const box = h('div', {class: 'upload-status', hidden: true, 'aria-live': 'polite'}, bar, text);
  box.show = (f, what) => {
    box.hidden = false;
    bar.firstChild.style.width = `${(f * 100).toFixed(1)}%`;
    bar.setAttribute('aria-valuenow', Math.round(f * 100));
    text.textContent = f < 1 ? `uploading ${what}: ${(f * 100).toFixed(0)}%` : `checking ${what}...`;
  };
  box.done = msg => { text.textContent = msg; };
  box.busy = () => /^(uploading|checking) /.test(text.textContent);
  return box;
}

function viewNew(main) {
  const stop = new AbortController();
  const status = h('p', {role: 'alert', class: 'small'});
  main.replaceChildren(h('h1', {}, 'New job'), h('p', {class: 'muted'}, 'Loading the options...'));

  (async () => {
    let schema;
    try {
      [schema] = await Promise.all([jobSchema(), loadNames()]);
    } catch (e) {
      main.replaceChildren(h('h1', {}, 'New job'), h('div', {class: 'error-box'}, e.message));
      return;
    }
    const models = [...names.models.values()];
    const datasets = [...names.datasets.values()];

    const modelFile = h('input', {type: 'file', id: 'model-file', accept: '.safetensors', 'aria-describedby': 'model-help'});
    const modelPick = h('select', {id: 'model-pick', 'aria-label': 'An uploaded model'},
      h('option', {value: ''}, models.length ? '(or pick an uploaded model)' : '(no models uploaded yet)'),
      models.map(m => h('option', {value: m.id}, `${m.name} (${m.id}, ${bytes(m.bytes)})`)));
    // a Swin file (timm's hub files, HuggingFace's) may not say its input size: the upload's img_size
    const modelSize = h('input', {type: 'number', id: 'model-img-size', name: 'img_size', min: 1, max: 4096,
                                  placeholder: 'from the file', 'aria-describedby': 'model-help'});
    const modelUp = uploadBox();
    modelFile.addEventListener('change', () => { if (modelFile.files.length) modelPick.value = ''; });
    modelPick.addEventListener('change', () => { if (modelPick.value) modelFile.value = ''; });

    const dataPick = h('select', {id: 'dataset-pick', 'aria-label': 'Dataset'},
      datasets.map(d => h('option', {value: d.id},
        d.kind === 'builtin' ? `${d.name} (built in)` : `${d.name} (${d.id})`)));
    const dataFile = h('input', {type: 'file', id: 'dataset-file', accept: '.tar,.tar.gz,.tgz,.zip', 'aria-describedby': 'dataset-help'});
    const dataUp = uploadBox();

    const groups = MAIN_OPTIONS.map(([title, opts]) => h('fieldset', {},
      h('legend', {}, title),
      h('div', {class: 'form-grid'}, opts.filter(o => schema[o]).map(o => optionField(o, schema[o])))));
    const hookUrl = h('input', {type: 'url', id: 'webhook-url', placeholder: 'https://ci.example.com/gplq', 'aria-describedby': 'webhook-help'});
    const hookSecret = h('input', {type: 'password', id: 'webhook-secret', autocomplete: 'off', minlength: 16});
    const more = h('details', {},
      h('summary', {}, 'More options'),
      h('div', {class: 'form-grid'}, MORE_OPTIONS.filter(o => schema[o]).map(o => optionField(o, schema[o]))),
      h('fieldset', {},
        h('legend', {}, 'Webhook'),
        h('div', {class: 'form-grid'},
          h('div', {class: 'field'}, h('label', {for: 'webhook-url'}, 'URL'), hookUrl,
            h('div', {class: 'help', id: 'webhook-help'}, 'Called on start and end with a signed JSON body (X-GPLQ-Signature).')),
          h('div', {class: 'field'}, h('label', {for: 'webhook-secret'}, 'Secret (16+ characters)'), hookSecret))));

    const submit = h('button', {type: 'submit', class: 'primary', id: 'submit'}, 'Quantize');
    const form = h('form', {id: 'new-job', 'aria-label': 'New quantization job', novalidate: true},
      h('fieldset', {},
        h('legend', {}, 'Model'),
        h('div', {class: 'choice'}, h('label', {for: 'model-file'}, 'Upload a checkpoint'), modelFile, modelPick),
        h('div', {class: 'choice'}, h('label', {for: 'model-img-size'}, 'Image size (px)'), modelSize),
        h('p', {id: 'model-help', class: 'help muted small'},
          'An FP32 ViT, DeiT or Swin as safetensors (timm, HuggingFace or torchvision names). The image size is needed only when the file does not say it (a Swin from timm or HuggingFace). Uploading the same file twice stores it once.'),
        modelUp),
      h('fieldset', {},
        h('legend', {}, 'Dataset'),
        h('div', {class: 'choice'}, dataPick, h('label', {for: 'dataset-file'}, 'or upload an image folder'), dataFile),
        h('p', {id: 'dataset-help', class: 'help muted small'},
          'A .tar, .tar.gz or .zip of one folder per class (train/ and val/ inside it optional).'),
        dataUp),
      groups, more,
      h('div', {class: 'row'}, submit, status));
    main.replaceChildren(h('h1', {}, 'New job'), form);

    form.addEventListener('submit', async e => {
      e.preventDefault();
      status.textContent = '';
      if (!modelFile.files.length && !modelPick.value) {
        status.textContent = 'Choose a model: upload a .safetensors file or pick an uploaded one.';
        modelFile.focus();
        return;
      }
      submit.disabled = true;
      try {
        let modelId = modelPick.value;
        if (modelFile.files.length) {
          const f = modelFile.files[0];
          const size = modelSize.value.trim() ? `&img_size=${encodeURIComponent(modelSize.value.trim())}` : '';
          const m = await upload(`/v1/models?name=${encodeURIComponent(f.name)}${size}`, f, x => modelUp.show(x, f.name));
          modelUp.done(`${f.name}: ${modelArch(m.config)} (${m.id})`);
          names.models.set(m.id, m);
          modelId = m.id;
        }
        let datasetId = dataPick.value;
        if (dataFile.files.length) {
          const f = dataFile.files[0];
          const d = await upload(`/v1/datasets?name=${encodeURIComponent(f.name)}`, f, x => dataUp.show(x, f.name));
          const s = d.summary || {};
          dataUp.done(`${f.name}: ${(s.classes || []).length} classes, ${s.train} training and ${s.val || s.test || 0} test images (${d.id})`);
          names.datasets.set(d.id, d);
          datasetId = d.id;
        }
        const body = {model_id: modelId, dataset_id: datasetId, ...readOptions(form, schema)};
        if (hookUrl.value) body.webhook = {url: hookUrl.value, secret: hookSecret.value};
        const job = await api('POST', '/v1/jobs', body);
        if (!stop.signal.aborted) location.hash = `#/jobs/${job.id}`; // unless the user went elsewhere
      } catch (err) {
        for (const box of [modelUp, dataUp]) if (!box.hidden && box.busy()) box.done('refused (see below)');
        status.textContent = err.field ? `${LABELS[err.field] || err.field}: ${err.message}` : err.message;
        const bad = err.field && form.elements[err.field];
        if (bad) bad.focus();
      } finally {
        submit.disabled = false;
      }
    });
  })();
  return () => stop.abort();
}

// ---------------------------------------------------------------------------------------------
// One job

function accuracyBars(job) {
  const m = job.metrics || {};
  const b = bits(job.spec), a = job.spec ? `W32A${job.spec.abits}` : 'W32A';
  return [
    ['fp32', 'FP32', 'fp32'],
    ['stage1', `${a} (stage 1)`, 'mid'],
    ['stage2_noqwt', `${b} without QwT`, 'mid'],
    ['gplq', `GPLQ ${b}`, 'ours'],
    ['ptq_baseline', `PTQ alone ${b}`, 'base'],
    ['minmax_baseline', `min-max ${b}`, 'base'],
    ['ort_onnx', `model.onnx in ONNX Runtime`, 'ours'],
    ['ort_w4', `model.w4.onnx (W${job.spec ? job.spec.wbits : ''}A32) in ONNX Runtime`, 'mid'],
  ].filter(([k]) => typeof m[k] === 'number').map(([key, label, kind]) => ({key, label, kind, value: m[key]}));
}

// The job page's parts, empty, laid out in main: the functions below fill them.
function jobPage(main, id) {
  const p = {
    title: h('h1', {}, `Job ${id}`),
    errBox: h('div', {class: 'error-box', role: 'alert', hidden: true}),
    timeline: h('ol', {class: 'timeline', 'aria-label': 'Stages'}),
    bar: progressBar(true),
    times: h('p', {class: 'small muted'}),
    lossBox: h('div', {class: 'chart', id: 'loss-chart'}),
    lossNow: h('p', {class: 'small muted', 'aria-live': 'off'}),
    accBox: h('div', {class: 'chart', id: 'accuracy-chart'}),
    qwtBox: h('div', {id: 'qwt'}, h('p', {class: 'muted small'}, 'After stage 2.')),
    artBox: h('div', {id: 'artifacts'}, h('p', {class: 'muted small'}, 'When the job succeeds.')),
    phaseBox: h('div', {id: 'phases'}, h('p', {class: 'muted small'}, 'When the job succeeds.')),
    hookBox: h('div', {id: 'webhooks'}),
    specBox: h('dl', {class: 'kv'}),
  };
  main.replaceChildren(p.title, p.errBox,
    h('section', {class: 'card', 'aria-labelledby': 'progress-title'},
      h('h2', {id: 'progress-title'}, 'Progress'), p.timeline, p.bar, p.times),
    h('div', {class: 'grid2'},
      h('section', {class: 'card', 'aria-labelledby': 'loss-title'},
        h('h2', {id: 'loss-title'}, 'Stage 1 losses'), p.lossBox,
        h('div', {class: 'legend', 'aria-hidden': 'true'},
          h('span', {}, h('span', {class: 'sw series-0'}), 'cross-entropy (left axis)'),
          h('span', {}, h('span', {class: 'sw series-1'}), 'PCA feature mimicking (right axis)')),
        p.lossNow),
      h('section', {class: 'card', 'aria-labelledby': 'acc-title'},
        h('h2', {id: 'acc-title'}, 'Top-1 accuracy'), p.accBox)),
    h('div', {class: 'grid2'},
      h('section', {class: 'card', 'aria-labelledby': 'qwt-title'},
        h('h2', {id: 'qwt-title'}, 'QwT per block'), p.qwtBox),
      h('section', {class: 'card', 'aria-labelledby': 'art-title'},
        h('h2', {id: 'art-title'}, 'Artifacts'), p.artBox)),
    h('section', {class: 'card', 'aria-labelledby': 'phase-title'},
      h('h2', {id: 'phase-title'}, 'Where the time and memory went'), p.phaseBox),
    h('div', {class: 'grid2'},
      h('section', {class: 'card', 'aria-labelledby': 'spec-title'},
        h('h2', {id: 'spec-title'}, 'Job'), p.specBox),
      h('section', {class: 'card', 'aria-labelledby': 'hook-title'},
        h('h2', {id: 'hook-title'}, 'Webhook deliveries'), p.hookBox)));
  return p;
}

// The stages: done, current (or where the job failed) and to come.
function paintTimeline(timeline, j) {
  const cur = phaseOf(j);
  timeline.replaceChildren(...PHASES.map((p, i) => {
    let cls = i < cur || j.state === 'succeeded' ? 'done' : i === cur ? 'current' : '';
    if (i === cur && (j.state === 'failed' || j.state === 'canceled')) cls = 'failed';
    const help = p.key === 'baselines' && j.spec && !j.spec.baselines ? 'FP32 top-1 (no baselines asked for)' : p.help;
    return h('li', {class: cls, 'aria-current': i === cur && !ENDED.has(j.state) ? 'step' : null},
             h('span', {class: 't'}, p.title), help || (j.state === 'queued' ? 'waiting for a worker' : ''));
  }));
}

// Elapsed, ETA, attempt: what the 1-second tick refreshes, nothing else.
function paintJobTimes(times, j) {
  const parts = [];
  if (j.started_at) parts.push(`elapsed ${duration(elapsed(j))}`);
  if (j.state === 'running' && j.progress && j.progress.eta_s !== null) parts.push(`about ${duration(j.progress.eta_s)} left`);
  if (j.attempts > 1) parts.push(`attempt ${j.attempts} of ${j.max_attempts}`);
  times.textContent = parts.join(' · ');
}

// Why the job failed (with advice) or was canceled; hidden while there is no error.
function paintJobError(errBox, j) {
  if (j.error) {
    errBox.hidden = false;
    errBox.replaceChildren(h('p', {}, h('strong', {}, j.state === 'canceled' ? 'Canceled: ' : 'The job failed: '), j.error),
                           j.state === 'canceled' ? null : h('p', {}, errorAdvice(j.error)));
  } else errBox.hidden = true;
}

// What was asked for, and when.
function paintJobSpec(specBox, j) {
  const s = j.spec || {};
  const model = names.models.get(j.model_id); // a deleted model's architecture is not known
  specBox.replaceChildren(
    h('dt', {}, 'Model'), h('dd', {}, `${modelName(j.model_id)} (${j.model_id})`),
    ...(model ? [h('dt', {}, 'Architecture'), h('dd', {}, modelArch(model.config))] : []),
    h('dt', {}, 'Dataset'), h('dd', {}, `${datasetName(j.dataset_id)}`),
    h('dt', {}, 'Bits'), h('dd', {}, bits(s)),
    h('dt', {}, 'Stage 1'), h('dd', {}, `${s.epochs} epoch(s) over ${s.train_subset ? `${s.train_subset} images` : 'all training images'}, batch ${s.batch_size}, lr ${s.lr}, alpha ${s.alpha}, PCA ${s.pca_var}`),
    h('dt', {}, 'Stage 2'), h('dd', {}, s.qwt ? `QwT on ${s.qwt_images} images, lambda ${s.lambda}` : 'no QwT'),
    h('dt', {}, 'Evaluation'), h('dd', {}, `${s.eval_subset ? `${s.eval_subset} test images` : 'all test images'}${s.baselines ? ', with baselines' : ''}`),
    h('dt', {}, 'Created'), h('dd', {}, when(j.created_at)),
    h('dt', {}, 'Started'), h('dd', {}, when(j.started_at) || 'not yet'),
    h('dt', {}, 'Finished'), h('dd', {}, when(j.finished_at) || (ENDED.has(j.state) ? '' : 'not yet')));
}

// A stage 1 progress event's losses onto the curves. A retried job's next attempt resumes from
// a checkpoint and reports some steps again: its points replace the earlier attempt's from
// there on.
function addLossPoint(losses, p) {
  while (losses.ce.length && losses.ce[losses.ce.length - 1][0] >= p.step) {
    losses.ce.pop();
    losses.pca.pop();
  }
  losses.ce.push([p.step, p.losses.ce]);
  losses.pca.push([p.step, p.losses.pca]);
}

// Stage 1's loss curves, and the newest point in words.
function drawLossCurves(lossBox, lossNow, losses) {
  lineChart(lossBox, {label: `Stage 1 losses over ${losses.ce.length} steps`, xLabel: 'stage 1 step',
                      series: [{name: 'ce', points: losses.ce}, {name: 'pca', points: losses.pca}]});
  const last = losses.ce.length - 1;
  lossNow.textContent = last >= 0 ? `step ${losses.ce[last][0]}: cross-entropy ${losses.ce[last][1].toFixed(4)}, PCA ${losses.pca[last][1].toFixed(4)}` : '';
}

// The top-1 accuracies in the job's metrics so far.
function drawAccuracy(accBox, job) {
  const bars = accuracyBars(job);
  barChart(accBox, {bars, label: bars.length
    ? `Top-1 accuracy: ${bars.map(b => `${b.label} ${pct(b.value)}`).join(', ')}`
    : 'Top-1 accuracy: none measured yet'});
}

// The job's webhook (if it has one) and its deliveries (list, from GET .../webhooks).
function paintWebhooks(hookBox, job, list) {
  if (!job.webhook && list.length === 0) {
    hookBox.replaceChildren(h('p', {class: 'muted small'}, 'No webhook for this job.'));
    return;
  }
  hookBox.replaceChildren(
    job.webhook ? h('p', {class: 'small'}, 'To ', h('code', {}, job.webhook.url)) : null,
    list.length === 0 ? h('p', {class: 'muted small'}, 'Nothing sent yet.') :
    h('table', {'aria-label': 'Webhook deliveries'},
      h('thead', {}, h('tr', {}, h('th', {}, 'Event'), h('th', {}, 'Status'), h('th', {class: 'num'}, 'Attempts'), h('th', {}, 'Last answer'))),
      h('tbody', {}, list.map(d => {
        const a = d.attempts[d.attempts.length - 1];
        const answer = !a ? (d.next_attempt_at ? `next try ${when(d.next_attempt_at)}` : '')
          : a.status_code ? `HTTP ${a.status_code} in ${a.latency_ms} ms` : (a.error || 'no answer');
        return h('tr', {}, h('td', {}, d.type), h('td', {}, h('span', {class: `state ${d.status === 'delivered' ? 'succeeded' : d.status === 'failed' ? 'failed' : 'queued'}`}, d.status)),
                 h('td', {class: 'num'}, d.attempts.length), h('td', {class: 'small'}, answer));
      }))));
}

// A short-lived download link (POST .../link), opened as a plain link: the browser writes
// the file to disk as it arrives, however large, instead of holding it in memory first (a
// fetch() with the token header would have to).
async function downloadArtifact(id, name, btn) {
  btn.disabled = true;
  try {
    const link = await api('POST', `/v1/jobs/${id}/artifacts/${encodeURIComponent(name)}/link?expires_in=60`);
    const a = h('a', {href: link.url, download: name});
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) {
    toast(`${name}: ${e.message}`, true);
  } finally {
    btn.disabled = false;
  }
}

// Job id's artifacts (list, from GET .../artifacts), each with what it is for, its size (and,
// given fp32Bytes, the size of the FP32 checkpoint it came from, its share of it) and a
// download button.
function paintArtifacts(artBox, id, list, fp32Bytes) {
  const share = (n) => fp32Bytes > 0 && n > 0
    ? h('div', {class: 'small muted size-share'}, `${(100 * n / fp32Bytes).toFixed(1)}% of FP32`) : '';
  const what = {'model.q.safetensors': 'packed 4-bit weights + steps, for deployment',
                'model.fakequant.safetensors': 'FP32 tensors holding quantized values, for PyTorch',
                'report.json': 'accuracies, diagnostics, timings, the spec',
                'model.onnx': 'ONNX (IR 10, opset 21): INT4 weights and activation QuantizeLinear/DequantizeLinear, the GPLQ model as measured, for ONNX Runtime, TensorRT, OpenVINO',
                'model.w4.onnx': 'ONNX with com.microsoft MatMulNBits: the same 4-bit weights, float activations, ONNX Runtime\'s fast CPU kernels'};
  artBox.replaceChildren(h('table', {'aria-label': 'Artifacts'},
    h('thead', {}, h('tr', {}, h('th', {}, 'File'), h('th', {class: 'num'}, 'Size'), h('th', {}, 'SHA-256'), h('th', {}, h('span', {class: 'sr-only'}, 'Download')))),
    h('tbody', {}, list.map(a => {
      const btn = h('button', {type: 'button', class: 'small', 'aria-label': `Download ${a.name}`}, 'Download');
      btn.addEventListener('click', () => downloadArtifact(id, a.name, btn));
      return h('tr', {'data-artifact': a.name},
               h('td', {}, h('span', {class: 'mono'}, a.name), h('div', {class: 'small muted'}, what[a.name] || '')),
               h('td', {class: 'num'}, bytes(a.bytes), a.name === 'report.json' ? '' : share(a.bytes)),
               h('td', {class: 'mono small', title: a.sha256}, `${a.sha256.slice(0, 12)}...`),
               h('td', {}, btn));
    }))));
}

// QwT's diagnostics per block, from the job's report.json.
function paintQwt(qwtBox, report) {
  const blocks = (report.diagnostics || {}).blocks || [];
  qwtBox.replaceChildren(blocks.length === 0 ? h('p', {class: 'muted small'}, 'No QwT diagnostics in the report.') :
    h('table', {'aria-label': 'QwT per block'},
      h('thead', {}, h('tr', {}, h('th', {}, 'Block'), h('th', {class: 'num'}, 'QwT R²'),
                          h('th', {class: 'num'}, 'Output MSE before'), h('th', {class: 'num'}, 'after'), h('th', {class: 'num'}, 'Change'))),
      h('tbody', {}, blocks.map(b => h('tr', {},
        h('td', {}, b.block), h('td', {class: 'num'}, b.qwt_r2.toFixed(3)),
        h('td', {class: 'num'}, b.mse_before.toPrecision(3)), h('td', {class: 'num'}, b.mse_after.toPrecision(3)),
        h('td', {class: 'num'}, `${((b.mse_after / b.mse_before - 1) * 100).toFixed(1)}%`))))),
    blocks.length ? h('p', {class: 'small muted'}, 'R²: the share of the quantized block\'s output error that QwT\'s linear compensation explains on the calibration images (a block whose R² would be 0 or less is left uncompensated).') : null);
}

// What each phase of the run cost (report.json's timings_s and peak_rss_mb_by_phase), in the
// order the phases run (the report's keys are sorted): the order of these labels, then any
// phase a newer worker reports that this page does not know.
const PHASE_NAMES = {
  eval_fp32: 'FP32 evaluation', minmax_baseline: 'min-max baseline', ptq_baseline: 'PTQ baseline',
  stage1_prep: 'stage 1: teacher features, PCA, calibration', stage1_train: 'stage 1: training',
  eval_stage1: 'stage 1 evaluation', stage2: 'stage 2 (weights, QwT)',
  eval_stage2_noqwt: 'evaluation without QwT', eval_gplq: 'GPLQ evaluation',
  artifacts: 'model files and their reload check', onnx: 'ONNX files and ONNX Runtime',
};
function paintPhases(phaseBox, report) {
  const t = report.timings_s || {}, peaks = report.peak_rss_mb_by_phase || {};
  const known = Object.keys(PHASE_NAMES).filter(k => k in t);
  const names = known.concat(Object.keys(t).filter(k => k !== 'total' && !(k in PHASE_NAMES)));
  if (names.length === 0) {
    phaseBox.replaceChildren(h('p', {class: 'muted small'}, 'No timings in the report.'));
    return;
  }
  const total = t.total || names.reduce((a, k) => a + t[k], 0);
  const mb = k => typeof peaks[k] === 'number' ? `${peaks[k]} MB` : '–';
  phaseBox.replaceChildren(
    h('table', {'aria-label': 'Time and peak memory by phase'},
      h('thead', {}, h('tr', {}, h('th', {}, 'Phase'), h('th', {class: 'num'}, 'Time'),
                          h('th', {class: 'num'}, 'Share'), h('th', {class: 'num'}, 'Peak RSS'))),
      h('tbody', {}, names.map(k => h('tr', {'data-phase': k},
        h('td', {}, PHASE_NAMES[k] || k), h('td', {class: 'num'}, t[k] < 10 ? `${t[k].toFixed(1)} s` : duration(t[k])),
        h('td', {class: 'num'}, total > 0 ? `${(100 * t[k] / total).toFixed(1)}%` : ''),
        h('td', {class: 'num'}, mb(k))))),
      h('tfoot', {}, h('tr', {}, h('th', {}, 'whole run'), h('th', {class: 'num'}, duration(total)),
                       h('th', {}), h('th', {class: 'num'}, report.peak_rss_mb ? `${report.peak_rss_mb} MB` : '–')))),
    h('p', {class: 'small muted'}, 'Seconds of the worker\'s run and its resident peak in each phase; ONNX Runtime runs in a process of its own, not counted here.'));
}

function viewJob(main, id) {
  const stop = new AbortController();
  let job = null, drawPending = false, extrasLoaded = false;
  const losses = {ce: [], pca: []};
  const {title, errBox, timeline, bar, times, lossBox, lossNow, accBox, qwtBox, artBox, phaseBox, hookBox, specBox} = jobPage(main, id);

  function drawCharts() {
    drawPending = false;
    drawLossCurves(lossBox, lossNow, losses);
    if (job) drawAccuracy(accBox, job);
  }
  const scheduleDraw = () => { if (!drawPending) { drawPending = true; requestAnimationFrame(drawCharts); } };

  let titleFor = null;
  const paintTimes = () => paintJobTimes(times, job);

  function paint() {
    const j = job;
    if (titleFor !== j.state) { // a rebuilt button would lose a click in flight, and focus
      titleFor = j.state;
      title.replaceChildren(`Job ${j.id}`, h('span', {class: `state ${j.state}`, id: 'job-state'}, j.state),
                            ...jobActions(j, gone => { if (gone) location.hash = '#/jobs'; else refreshJob(); }));
    }
    paintTimeline(timeline, j);
    bar.set(j);
    paintTimes();
    paintJobError(errBox, j);
    paintJobSpec(specBox, j);
    scheduleDraw();
    if (ENDED.has(j.state) && !extrasLoaded) { extrasLoaded = true; loadExtras(); }
  }

  async function loadWebhooks() {
    try {
      const r = await api('GET', `/v1/jobs/${id}/webhooks`, undefined, {signal: stop.signal});
      paintWebhooks(hookBox, job, r.deliveries || []);
    } catch (e) {
      if (e.name !== 'AbortError') hookBox.replaceChildren(h('p', {class: 'small'}, e.message));
    }
  }

  async function loadExtras() {
    loadWebhooks();
    if (job.state !== 'succeeded') {
      artBox.replaceChildren(h('p', {class: 'muted small'}, 'None: the job did not succeed.'));
      qwtBox.replaceChildren(h('p', {class: 'muted small'}, 'None: the job did not succeed.'));
      phaseBox.replaceChildren(h('p', {class: 'muted small'}, 'None: the job did not succeed.'));
      return;
    }
    try {
      const list = (await api('GET', `/v1/jobs/${id}/artifacts`, undefined, {signal: stop.signal})).artifacts || [];
      // the uploaded checkpoint's size, what the artifacts are measured against (gone if the
      // model was deleted: then sizes alone)
      const fp32 = await api('GET', `/v1/models/${job.model_id}`, undefined, {signal: stop.signal})
        .then(m => m.bytes, e => { if (e.name === 'AbortError') throw e; return 0; });
      paintArtifacts(artBox, id, list, fp32);
      const report = await api('GET', `/v1/jobs/${id}/artifacts/report.json`, undefined, {signal: stop.signal});
      paintQwt(qwtBox, report);
      paintPhases(phaseBox, report);
    } catch (e) {
      if (e.name !== 'AbortError') artBox.replaceChildren(h('p', {class: 'small'}, e.message));
    }
  }

  let refreshTimer = 0;
  const refreshSoon = () => { clearTimeout(refreshTimer); refreshTimer = setTimeout(refreshJob, 300); };
  let hookTimer = 0;
  const loadWebhooksSoon = () => { clearTimeout(hookTimer); hookTimer = setTimeout(loadWebhooks, 1500); };

  async function refreshJob() {
    try {
      job = await api('GET', `/v1/jobs/${id}`, undefined, {signal: stop.signal});
      paint();
    } catch (e) {
      if (e.name !== 'AbortError') {
        main.replaceChildren(h('h1', {}, `Job ${id}`), h('div', {class: 'error-box', role: 'alert'}, e.message),
                             h('p', {}, h('a', {href: '#/jobs'}, 'Back to the jobs')));
        stop.abort();
      }
    }
  }

  (async () => {
    await loadNames().catch(() => {});
    await refreshJob();
    if (stop.signal.aborted) return;
    if (!ENDED.has(job.state)) loadWebhooks();
    // The history brings the loss curve so far; the job itself was fetched as it is now, so
    // only the events after its newest one (last_event_id) move the bar, stage and state.
    const seen = job.last_event_id || 0;
    await followEvents(id, 0, ev => {
      const p = ev.data;
      if (ev.type === 'progress' && p.stage === 'stage1' && p.losses) addLossPoint(losses, p);
      if (ev.id <= seen) return scheduleDraw(); // history: only the loss curve grows
      if (ev.type === 'progress') {
        // A new part means the last one ended, and an evaluation's accuracy is in the job's
        // metrics now (progress events carry no metrics): fetch the job again.
        const prev = job.progress;
        if (!prev || prev.stage !== p.stage || prev.part !== p.part) refreshSoon();
        job = {...job, progress: p, stage: p.stage};
        paint();
      } else {
        if (p.job) job = p.job; // live: the job as of this event
        paint();
        refreshSoon();
        if (job.webhook) loadWebhooksSoon();
      }
    }, stop.signal);
    if (!stop.signal.aborted) await refreshJob();
  })();
  const tick = setInterval(() => { if (job && job.state === 'running') paintTimes(); }, 1000);
  return () => { stop.abort(); clearInterval(tick); clearTimeout(refreshTimer); clearTimeout(hookTimer); };
}

// ---------------------------------------------------------------------------------------------
// Models and datasets: what has been uploaded, and deleting it

function viewUploads(main) {
  const stop = new AbortController();
  const modelsBox = h('div', {id: 'models'}, h('p', {class: 'muted small'}, 'Loading...'));
  const dataBox = h('div', {id: 'datasets'}, h('p', {class: 'muted small'}, 'Loading...'));
  main.replaceChildren(
    h('h1', {}, 'Models and datasets', h('a', {href: '#/new', class: 'button primary', role: 'button'}, 'Upload on a new job')),
    h('section', {class: 'card table-wrap', 'aria-labelledby': 'models-title'}, h('h2', {id: 'models-title'}, 'Models'), modelsBox),
    h('section', {class: 'card table-wrap', 'aria-labelledby': 'data-title'}, h('h2', {id: 'data-title'}, 'Datasets'), dataBox));

  // Delete: the API refuses (409) while a queued or running job uses it, and says which.
  const deleter = (what, x) => actionButton('Delete', `Delete ${what} ${x.name}`, 'small',
    `Delete the ${what} ${x.name} (${x.id})? Jobs that used it keep their artifacts.`,
    'DELETE', `/v1/${what === 'model' ? 'models' : 'datasets'}/${x.id}`, `Deleted ${x.name}`, load);

  async function load() {
    try {
      await loadNames(stop.signal);
      const models = [...names.models.values()], datasets = [...names.datasets.values()];
      modelsBox.replaceChildren(models.length === 0 ? h('p', {class: 'muted small'}, 'No models yet.') :
        h('table', {'aria-label': 'Models'},
          h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Id'), h('th', {}, 'Architecture'),
                              h('th', {class: 'num'}, 'Size'), h('th', {}, 'Uploaded'), h('th', {}, h('span', {class: 'sr-only'}, 'Actions')))),
          h('tbody', {}, models.map(x => {
            const c = x.config || {};
            return h('tr', {'data-model': x.id}, h('td', {}, x.name), h('td', {class: 'mono small'}, x.id),
              h('td', {class: 'small'}, `${modelArch(c)} (${c.convention})`),
              h('td', {class: 'num'}, bytes(x.bytes)), h('td', {class: 'small'}, when(x.created_at)), h('td', {}, deleter('model', x)));
          }))));
      dataBox.replaceChildren(h('table', {'aria-label': 'Datasets'},
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'Id'), h('th', {}, 'Classes'),
                            h('th', {class: 'num'}, 'Training'), h('th', {class: 'num'}, 'Test'), h('th', {class: 'num'}, 'Size'), h('th', {}, h('span', {class: 'sr-only'}, 'Actions')))),
        h('tbody', {}, datasets.map(x => {
          const sm = x.summary || {};
          const classes = sm.classes || [];
          return h('tr', {'data-dataset': x.id}, h('td', {}, x.name), h('td', {class: 'mono small'}, x.id),
            h('td', {class: 'small', title: classes.join(', ')}, `${classes.length}: ${classes.slice(0, 4).join(', ')}${classes.length > 4 ? ', ...' : ''}`),
            h('td', {class: 'num'}, sm.train), h('td', {class: 'num'}, sm.val || sm.test || 0),
            h('td', {class: 'num'}, x.kind === 'builtin' ? 'built in' : bytes(x.bytes)),
            h('td', {}, x.kind === 'builtin' ? '' : deleter('dataset', x)));
        }))));
    } catch (e) {
      if (e.name !== 'AbortError') toast(e.message, true);
    }
  }
  load();
  return () => stop.abort();
}

// ---------------------------------------------------------------------------------------------
// The frame: routing, header, health

let leave = () => {};
let signInReason = ''; // what the sign-in page says first (why the tab was signed out)

// Goes to hash; the hashchange handler routes, or route() here when the hash is already it.
function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  leave();
  const main = document.getElementById('main');
  const signedIn = !!token();
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('signout').hidden = !signedIn;
  const t = token();
  document.getElementById('who').textContent = signedIn ? `token ${t.slice(5, 21)}` : '';
  const hash = location.hash || '#/jobs';
  for (const a of document.querySelectorAll('#nav a'))
    a.toggleAttribute('aria-current', a.getAttribute('href') === hash);
  if (!signedIn) {
    leave = viewSignIn(main, signInReason);
    signInReason = '';
    return;
  }
  const m = hash.match(/^#\/jobs\/([A-Za-z0-9_-]+)$/);
  if (m) leave = viewJob(main, m[1]);
  else if (hash === '#/new') leave = viewNew(main);
  else if (hash === '#/uploads') leave = viewUploads(main);
  else leave = viewJobs(main);
  for (const a of document.querySelectorAll('#nav a'))
    if (a.hasAttribute('aria-current')) a.setAttribute('aria-current', 'page');
  main.focus({preventScroll: true});
}

async function health() {
  const box = document.getElementById('health');
  try {
    const r = await fetch('/v1/health', {cache: 'no-store'});
    const j = await r.json();
    box.className = j.status === 'ok' && j.workers_alive > 0 ? 'health' : 'health down';
    box.replaceChildren(h('span', {class: 'dot', 'aria-hidden': 'true'}),
      `${j.workers_alive} worker${j.workers_alive === 1 ? '' : 's'} · ${j.queue_depth} queued`);
  } catch (_) {
    box.className = 'health down';
    box.replaceChildren(h('span', {class: 'dot', 'aria-hidden': 'true'}), 'gplqd unreachable');
  }
}

document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));
window.addEventListener('hashchange', route);
route();
health();
setInterval(health, 10000);

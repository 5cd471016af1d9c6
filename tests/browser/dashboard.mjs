// dashboard.mjs: the dashboard in a real browser (Debian's chromium, headless, driven by
// playwright-core; no browser download), against a real gplqd that
// tests/integration/test_dashboard.py started. Usage:
//
//   node dashboard.mjs SCENARIO URL TOKEN OUTDIR [ARGS...]
//
// Each scenario does what a user does, saves screenshots under OUTDIR, and prints one JSON
// line with what it saw; the Python test checks that against the API. Any failure (an
// exception, a console error, an uncaught page error) exits 1 with the reason.
//   job MODEL    sign in (a wrong token first), upload MODEL, submit a job on a training
//                subset, watch the progress bar to the end, read the accuracy chart, download
//                model.q.safetensors
//   cancel JOB   cancel the running JOB from the jobs table, then delete it
//   failed JOB   open the failed JOB's page: the error and what to do about it
//   dataset MODEL_ID BAD GOOD   pick the uploaded model, upload BAD as a dataset (the server's
//                reason must show), then GOOD (a tar.gz image folder), submit a small job on it
//   swin FILE    upload FILE, a Swin that does not say its image size (the server's reason must
//                show), then again with the image size 16; submit; read the job page's and the
//                models table's architecture line
import {chromium} from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const [scenario, url, token, outdir, ...rest] = process.argv.slice(2);
fs.mkdirSync(outdir, {recursive: true});
const problems = [];
const browser = await chromium.launch({
  executablePath: process.env.GPLQ_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // No sandbox (CI runs as root), no GPU, and none of Chromium's own connections: the machine's
  // network is closed and tests talk to loopback only.
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({viewport: {width: 1280, height: 800}, acceptDownloads: true});
const page = await context.newPage();
page.on('pageerror', e => problems.push(`page error: ${e.message}`));
// The browser logs a refused request as a console error; the refusals a scenario provokes on
// purpose (the wrong token's 401, the bad upload's 422, deleting what a job uses: 409) are
// expected while `expected` holds their status, any other is a problem.
let expected = null;
page.on('console', m => {
  if (m.type() !== 'error') return;
  if (expected && m.text().includes(` ${expected} `)) return;
  problems.push(`console: ${m.text()}`);
});
page.on('dialog', d => d.accept()); // the confirm() of Cancel and Delete
// Where each event stream the page opened began (its Last-Event-ID): the jobs table starts at
// the job's newest event, the job page at 0 (it draws the loss history).
const eventStreams = [];
page.on('request', r => {
  const m = r.url().match(/\/v1\/jobs\/([^/]+)\/events/);
  if (m) eventStreams.push({job: m[1], from: Number(r.headers()['last-event-id'])});
});
page.setDefaultTimeout(30000);
let shot = 0;
const screenshot = async (name, full) => {
  const file = path.join(outdir, `${scenario}-${String(++shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({path: file, fullPage: !!full});
  return file;
};

async function signIn(withWrongTokenFirst) {
  await page.goto(url);
  await page.getByLabel('API token').waitFor();
  if (withWrongTokenFirst) {
    expected = 401;
    await page.getByLabel('API token').fill('gplq_t_0000000000000000' + 'x'.repeat(43));
    await page.getByRole('button', {name: 'Sign in'}).click();
    await page.getByText('This token was refused').waitFor();
    expected = null;
    await screenshot('wrong-token');
  }
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', {name: 'Sign in'}).click();
  await page.getByRole('heading', {name: 'Jobs'}).waitFor();
}

async function scenarioJob(model) {
  const seen = {};
  await signIn(true);
  await screenshot('jobs-empty');
  await page.getByRole('link', {name: 'New job'}).first().click();
  await page.locator('#submit').waitFor();
  await page.setInputFiles('#model-file', model);
  // A job that ends in about a minute on 2 cores: a training subset, smaller calibrations.
  await page.getByLabel('Training images').fill('1024');
  await page.getByLabel('Test images').fill('500');
  await page.locator('details summary').click();
  await page.getByLabel('PCA samples').fill('1000');
  await page.getByLabel('Calibration images').fill('128');
  await page.getByLabel('QwT images').fill('128');
  await page.getByLabel('Batch size').fill('64');
  await screenshot('new-job', true);
  await page.getByRole('button', {name: 'Quantize'}).click();
  await page.waitForURL(/#\/jobs\/j_/, {timeout: 60000});
  seen.job = page.url().split('#/jobs/')[1];

  // The progress bar, sampled until the job ends: it must move, and reach 100.
  const bar = page.locator('.progress-box [role=progressbar]').first();
  const values = [];
  let shotRunning = false;
  const deadline = Date.now() + 300000;
  for (;;) {
    const state = await page.locator('#job-state').textContent().catch(() => '');
    const v = Number(await bar.getAttribute('aria-valuenow'));
    if (values[values.length - 1] !== v) values.push(v);
    if (!shotRunning && state === 'running' && v > 20 &&
        Number(await page.locator('#loss-chart path.line').first().getAttribute('data-points').catch(() => 0)) >= 3) {
      await screenshot('job-running', true);
      shotRunning = true;
    }
    if (['succeeded', 'failed', 'canceled'].includes(state)) { seen.state = state; break; }
    if (Date.now() > deadline) throw new Error(`the job did not end in 300 s (progress ${values.join(' ')})`);
    await page.waitForTimeout(250);
  }
  seen.progress = values;
  await page.locator('#artifacts table').waitFor();
  await page.locator('#qwt table').waitFor();
  await page.locator('#phases table').waitFor();
  seen.loss_points = Number(await page.locator('#loss-chart path.line').first().getAttribute('data-points'));
  seen.accuracy = {};
  for (const t of await page.locator('#accuracy-chart text.value').all())
    seen.accuracy[await t.getAttribute('data-key')] = await t.textContent();
  seen.accuracy_label = await page.locator('#accuracy-chart svg').getAttribute('aria-label');
  seen.qwt_rows = await page.locator('#qwt tbody tr').count();
  seen.phases = await page.locator('#phases tbody tr').evaluateAll(rs => rs.map(r => r.dataset.phase));
  seen.size_share = {};
  for (const r of await page.locator('#artifacts tr[data-artifact]').all()) {
    const s = r.locator('.size-share');
    if (await s.count()) seen.size_share[await r.getAttribute('data-artifact')] = await s.textContent();
  }
  seen.timeline = await page.locator('.timeline li').evaluateAll(ls => ls.map(l => l.className));
  await screenshot('job-done', true);

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', {name: 'Download model.q.safetensors'}).click(),
  ]);
  seen.download = path.join(outdir, download.suggestedFilename());
  await download.saveAs(seen.download);

  await page.getByRole('link', {name: 'Jobs', exact: true}).click();
  await page.locator(`tr[data-job="${seen.job}"]`).waitFor();
  seen.table_state = await page.locator(`tr[data-job="${seen.job}"] .state`).textContent();
  await screenshot('jobs-after');
  return seen;
}

async function scenarioCancel(job) {
  const seen = {job};
  await signIn(false);
  const row = page.locator(`tr[data-job="${job}"]`);
  await row.waitFor();
  // Live through the event stream: the bar moves while we look at it (the test made the job long).
  const bar = row.locator('[role=progressbar]');
  await page.waitForFunction(el => Number(el.getAttribute('aria-valuenow')) > 0, await bar.elementHandle(), {timeout: 120000});
  seen.progress_before_cancel = Number(await bar.getAttribute('aria-valuenow'));
  seen.label_before_cancel = await row.locator('.progress-label').textContent();
  await screenshot('jobs-running');
  // The state filter: the running job is not a succeeded one; under "Running" it is back.
  const filter = page.getByLabel('Show jobs in state');
  await filter.selectOption('succeeded');
  await row.waitFor({state: 'detached'});
  await page.getByText('No succeeded jobs.').waitFor();
  await filter.selectOption('running');
  await row.waitFor();
  await row.getByRole('button', {name: `Cancel job ${job}`}).click();
  // canceled, it leaves the "Running" view by itself, and shows under "Canceled"
  await row.waitFor({state: 'detached', timeout: 60000});
  seen.left_running_view = true;
  await filter.selectOption('canceled');
  await row.locator('.state', {hasText: 'canceled'}).waitFor({timeout: 60000});
  seen.state = 'canceled';
  await screenshot('jobs-canceled');
  await row.getByRole('button', {name: `Delete job ${job}`}).click();
  await row.waitFor({state: 'detached'});
  seen.deleted = true;
  seen.event_streams = eventStreams;
  return seen;
}

// More jobs than a page: "Older jobs" goes one page further each time, and goes away at the end.
async function scenarioPaging() {
  const seen = {rows: []};
  await signIn(false);
  const rows = page.locator('tr[data-job]');
  const more = page.getByRole('button', {name: 'Older jobs'});
  await page.waitForFunction(() => document.querySelectorAll('tr[data-job]').length > 0);
  seen.rows.push(await rows.count());
  while (await more.isVisible()) {
    const before = await rows.count();
    await more.click();
    await page.waitForFunction(n => document.querySelectorAll('tr[data-job]').length > n, before, {timeout: 10000})
      .catch(() => {});
    seen.rows.push(await rows.count());
    if (seen.rows.length > 10) break;
  }
  seen.ids = await rows.evaluateAll(trs => trs.map(tr => tr.dataset.job));
  await screenshot('jobs-paged');
  // signing out lands on the sign-in page, which says so
  await page.getByRole('button', {name: 'Sign out'}).click();
  await page.getByLabel('API token').waitFor();
  seen.signed_out = await page.locator('.signin [role=alert]').textContent();
  return seen;
}

async function scenarioDataset(modelId, bad, good) {
  const seen = {};
  await signIn(false);
  await page.getByRole('link', {name: 'New job'}).first().click();
  await page.locator('#submit').waitFor();
  await page.getByLabel('An uploaded model').selectOption(modelId);
  await page.getByLabel('Training images').fill('0');
  await page.getByLabel('Test images').fill('0');
  await page.getByLabel('Batch size').fill('64');
  await page.getByLabel('Calibration images').fill('64');
  await page.getByLabel('QwT images').fill('64');
  await page.locator('details summary').click();
  await page.getByLabel('PCA samples').fill('128');
  // A file that is no dataset: the form must say why the server refused it.
  expected = 422;
  await page.setInputFiles('#dataset-file', bad);
  await page.getByRole('button', {name: 'Quantize'}).click();
  const alert = page.locator('#new-job [role=alert]');
  await page.waitForFunction(el => el.textContent.length > 0, await alert.elementHandle());
  seen.refusal = await alert.textContent();
  expected = null;
  await screenshot('dataset-refused', true);
  await page.setInputFiles('#dataset-file', good);
  await page.getByRole('button', {name: 'Quantize'}).click();
  await page.waitForURL(/#\/jobs\/j_/, {timeout: 60000});
  seen.job = page.url().split('#/jobs/')[1];
  await page.locator('#job-state').waitFor();
  await screenshot('dataset-job');

  // Models and datasets: the upload is listed; deleting it while the job waits is refused with
  // the server's reason; after the job is canceled it goes, and so does the model.
  await page.getByRole('link', {name: 'Models and datasets'}).click();
  const row = page.locator('#datasets tr', {hasText: 'fmnist-pngs.tar.gz'});
  await row.waitFor();
  seen.dataset_row = await row.locator('td').allTextContents();
  seen.dataset_id = await row.getAttribute('data-dataset');
  await screenshot('uploads', true);
  expected = 409;
  await row.getByRole('button', {name: 'Delete dataset fmnist-pngs.tar.gz'}).click();
  await page.locator('#toast:not([hidden])').waitFor();
  seen.refused_delete = await page.locator('#toast').textContent();
  expected = null;
  await page.getByRole('link', {name: 'Jobs', exact: true}).click();
  await page.getByRole('button', {name: `Cancel job ${seen.job}`}).click();
  await page.locator(`tr[data-job="${seen.job}"] .state`, {hasText: 'canceled'}).waitFor();
  await page.getByRole('link', {name: 'Models and datasets'}).click();
  await row.getByRole('button', {name: 'Delete dataset fmnist-pngs.tar.gz'}).click();
  await row.waitFor({state: 'detached'});
  const modelRow = page.locator(`#models tr[data-model="${modelId}"]`);
  await modelRow.getByRole('button', {name: /^Delete model /}).click();
  await modelRow.waitFor({state: 'detached'});
  seen.deleted = true;
  return seen;
}

async function scenarioSwin(file) {
  const seen = {};
  await signIn(false);
  await page.getByRole('link', {name: 'New job'}).first().click();
  await page.locator('#submit').waitFor();
  expected = 422;
  await page.setInputFiles('#model-file', file);
  await page.getByRole('button', {name: 'Quantize'}).click();
  const alert = page.locator('#new-job [role=alert]');
  await page.waitForFunction(el => el.textContent.length > 0, await alert.elementHandle());
  seen.refusal = await alert.textContent();
  expected = null;
  await page.getByLabel('Image size (px)').fill('16');
  await page.getByRole('button', {name: 'Quantize'}).click();
  await page.waitForURL(/#\/jobs\/j_/, {timeout: 60000});
  seen.job = page.url().split('#/jobs/')[1];
  const arch = page.locator('dl.kv dt', {hasText: 'Architecture'}).locator('xpath=following-sibling::dd[1]');
  seen.job_arch = await arch.textContent();
  await page.getByRole('link', {name: 'Models and datasets'}).click();
  const row = page.locator('#models tr[data-model]').first();
  await row.waitFor();
  seen.model_id = await row.getAttribute('data-model');
  seen.model_row = await row.locator('td').allTextContents();
  await screenshot('swin-model', true);
  return seen;
}

async function scenarioFailed(job) {
  await signIn(false);
  await page.goto(`${url}#/jobs/${job}`);
  const box = page.locator('.error-box');
  await box.waitFor();
  await page.locator('.timeline li.failed').waitFor();
  const seen = {job, state: await page.locator('#job-state').textContent(),
                error: await box.locator('p').first().textContent(),
                advice: await box.locator('p').nth(1).textContent(),
                failed_phase: await page.locator('.timeline li.failed .t').textContent()};
  await screenshot('job-failed', true);
  return seen;
}

// A job that was retried: its loss curve must go forward only (x of every point of both lines).
async function scenarioCurve(job, lastStep) {
  await signIn(false);
  await page.goto(`${url}#/jobs/${job}`);
  // the whole history drawn: the last line says the job's last stage-1 step
  await page.getByText(`step ${lastStep}: cross-entropy`).waitFor();
  const lines = await page.locator('#loss-chart path.line').evaluateAll(ps => ps.map(p =>
    [...p.getAttribute('d').matchAll(/[ML](-?[\d.]+),/g)].map(m => Number(m[1]))));
  await screenshot('job-retried', true);
  return {job, xs: lines, state: await page.locator('#job-state').textContent()};
}

let result, failed = false;
try {
  if (scenario === 'job') result = await scenarioJob(rest[0]);
  else if (scenario === 'paging') result = await scenarioPaging();
  else if (scenario === 'curve') result = await scenarioCurve(rest[0], rest[1]);
  else if (scenario === 'cancel') result = await scenarioCancel(rest[0]);
  else if (scenario === 'dataset') result = await scenarioDataset(...rest);
  else if (scenario === 'failed') result = await scenarioFailed(rest[0]);
  else if (scenario === 'swin') result = await scenarioSwin(rest[0]);
  else throw new Error(`unknown scenario ${scenario}`);
} catch (e) {
  failed = true;
  problems.push(e.stack || String(e));
  await screenshot('failure', true).catch(() => {});
}
await browser.close();
console.log(JSON.stringify({scenario, result, problems}));
process.exit(failed || problems.length ? 1 : 0);

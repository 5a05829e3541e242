// The dashboard in a real browser (issue 23): Debian's chromium, headless, driven by
// playwright-core (web/node_modules, from scripts/setup.sh). Brings up a local cluster of 10
// worker daemons with auth tokens (`tern cluster up`), then
//   1. a wrong, a missing and a worker token are refused (API 401/403, login form 401),
//   2. logs in with the user token, submits a short job and watches its page: the loss chart
//      gets points, the state reads SUCCEEDED, the per-rank table shows every rank finished;
//      each chart update is measured against the trainer's progress event time (< 2 s),
//   3. saves a screenshot of the job page ($TERN_BROWSER_OUT/dashboard-job.png; the jobs and
//      cluster pages too, dashboard-jobs.png and dashboard-cluster.png),
//   4. cancels a pending job with the page's Cancel button,
//   5. with 50 finished jobs, loads the jobs page (< 1 s to a rendered table of 50 rows) and
//      the cluster page (10 workers).
// Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
//
//   node tests/browser/dashboard_test.mjs      (ctest -L browser sets the paths below)
//   TERN_BIN_DIR=build/bin TERN_SOURCE_DIR=. TERN_BROWSER_OUT=build/browser
//   (TERN_TRAINER=PATH: another tern-trainer than the one next to tern; TERN_CHROMIUM=PATH)
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const source = path.resolve(process.env.TERN_SOURCE_DIR || '.');
const bin = path.resolve(process.env.TERN_BIN_DIR || path.join(source, 'build/bin'));
const out = path.resolve(process.env.TERN_BROWSER_OUT || path.join(bin, '..', 'browser'));
const chromiumPath = process.env.TERN_CHROMIUM || '/usr/bin/chromium';
const tern = path.join(bin, 'tern');

let passed = 0;
let failed = 0;
const began = Date.now();
function check(ok, what, detail = '') {
  if (ok) passed++;
  else failed++;
  const at = ((Date.now() - began) / 1000).toFixed(1).padStart(5);
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${at} s  ${what}${detail ? ': ' + detail : ''}`);
  return ok;
}
function fatal(why) {
  console.log(`FAIL ${why}`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}

const require = createRequire(path.join(source, 'web', 'package.json'));
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  fatal(`playwright-core is not installed in ${source}/web/node_modules (run scripts/setup.sh): ${e.message}`);
}
if (!fs.existsSync(chromiumPath)) fatal(`no chromium at ${chromiumPath} (apt-get install chromium; scripts/setup.sh does)`);
if (!fs.existsSync(tern)) fatal(`no ${tern} (build first)`);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn, timeoutMs, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------- the cluster
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-browser-'));
const token = (name) => {
  const t = crypto.randomBytes(16).toString('hex');
  fs.writeFileSync(path.join(dir, name + '.token'), t + '\n', { mode: 0o600 });
  return t;
};
const userToken = token('user');
const workerToken = token('workers');
const grpcPort = await freePort();
let httpPort = await freePort();
while (httpPort === grpcPort) httpPort = await freePort();
const cluster = path.join(dir, 'cluster.yaml');
fs.writeFileSync(cluster, `name: browser
coordinator: {listen: 127.0.0.1:${grpcPort}, heartbeat_ms: 200, lease_ms: 3000, metrics_port: ${httpPort}}
state_dir: ${path.join(dir, 'state')}
${process.env.TERN_TRAINER ? 'trainer: ' + path.resolve(process.env.TERN_TRAINER) : ''}
regions:
  - {name: east, workers: 6, slots: 1}
  - {name: west, workers: 4, slots: 1}
network: {emulate: false}
auth:
  tokens:
    - {user: alice, token_file: user.token, role: user}
    - {user: daemons, token_file: workers.token, role: worker}
  token_file: user.token
  worker_token_file: workers.token
`);
const job = path.join(dir, 'tiny.yaml');
// A tiny job that still runs a few seconds (each step sleeps ~20 ms), reporting every 2 steps.
fs.writeFileSync(job, `name: tiny
workers: 2
model: {type: mlp}
data: {source: synthetic, train_size: 2048, test_size: 256}
train: {steps: 120, batch_size: 16, lr: 0.05, log_every: 2, eval_every: 40, threads: 1}
debug: {transient_prob: 1.0, transient_ms: 20}
`);
const filler = path.join(dir, 'filler.yaml');
// Needs 11 slots on a 10-slot cluster: waits PENDING until cancelled (no trainer starts).
fs.writeFileSync(filler, `name: filler
workers: 11
model: {type: mlp}
data: {source: synthetic, train_size: 256, test_size: 64}
train: {steps: 2}
`);

function cli(...args) {
  const extra = args[0] === 'cluster' ? ['--json'] : ['--cluster', cluster, '--json'];
  const r = spawnSync(tern, [...args, ...extra], { encoding: 'utf8', timeout: 60000 });
  if (r.status !== 0) throw new Error(`tern ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout);  // one JSON document (possibly over several lines)
}

const execFileAsync = promisify(execFile);
// Exit 3 (coordinator unreachable: the call never got through, e.g. a connect that timed out
// on a loaded machine) is tried again; anything else fails the test.
async function cliAsync(...args) {
  for (let attempt = 1; ; attempt++) {
    try {
      const { stdout } = await execFileAsync(tern, [...args, '--cluster', cluster, '--json'], { timeout: 60000 });
      return JSON.parse(stdout);
    } catch (e) {
      if (e.code !== 3 || attempt >= 5) throw e;
      await sleep(500 * attempt);
    }
  }
}

const base = `http://127.0.0.1:${httpPort}`;
let browser;
let up = false;
try {
  const started = cli('cluster', 'up', cluster);
  up = true;
  check(started.dashboard === `${base}/jobs`, 'tern cluster up names the dashboard', started.dashboard);

  // ------------------------------------------------------------ 1. tokens refused
  const api = (p, headers = {}) => fetch(base + p, { headers });
  check((await api('/api/v1/jobs')).status === 401, 'the API without a token is refused (401)');
  check((await api('/api/v1/jobs', { Authorization: 'Bearer ' + 'f'.repeat(32) })).status === 401,
    'the API with a wrong token is refused (401)');
  check((await api('/api/v1/cluster', { Authorization: 'Bearer ' + workerToken })).status === 403,
    'the API with a worker token is refused (403)');
  check((await api('/api/v1/jobs', { Authorization: 'Bearer ' + userToken })).status === 200,
    'the API with the user token answers');
  const pageNoToken = await fetch(base + '/jobs', { redirect: 'manual' });
  check(pageNoToken.status === 303 && pageNoToken.headers.get('location').startsWith('/login'),
    'a page without a token redirects to the login form', `${pageNoToken.status} ${pageNoToken.headers.get('location')}`);

  browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(base + '/jobs');
  check(new URL(page.url()).pathname === '/login', 'the browser is sent to /login', page.url());
  await page.fill('#token', 'not-the-token-' + 'x'.repeat(20));
  const [wrong] = await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  check(wrong.status() === 401, 'the login form refuses a wrong token (401)', String(wrong.status()));
  check((await page.textContent('#error')).includes('unknown token'), 'and says so on the page');
  check((await context.cookies()).length === 0, 'and sets no session cookie');
  const stillRefused = await page.evaluate(async () => (await fetch('/api/v1/jobs')).status);
  check(stillRefused === 401, 'the page cannot read the API after a wrong token', String(stillRefused));

  // ------------------------------------------------------------ 2. a job, live
  await page.fill('#token', userToken);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  check(new URL(page.url()).pathname === '/jobs', 'the user token logs in and returns to /jobs', page.url());
  const submitted = cli('submit', job);
  const id = submitted.job_id;
  check(typeof id === 'string' && id.length > 0, 'tern submit', JSON.stringify(submitted).slice(0, 200));
  await page.goto(`${base}/job?id=${encodeURIComponent(id)}`);
  const t0 = Date.now();
  await until('the loss chart to have points', async () => Number(await page.getAttribute('#chart-loss', 'data-points')) > 0, 60000);
  check(true, 'the loss chart has points', `after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await until('the state to read SUCCEEDED', async () => (await page.textContent('#state')) === 'SUCCEEDED', 90000);
  check(true, 'the state reads SUCCEEDED', `after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  // The timeline and log loops poll every 2 s: their last round comes within that.
  await until('the timeline to show the end', async () =>
    page.$$eval('#timeline li', (li) => li.length > 0 && li[li.length - 1].className === 'ev-finished'), 10000).catch(() => {});
  const points = Number(await page.getAttribute('#chart-loss', 'data-points'));
  check(points >= 40, 'the loss chart has the run (60 progress events of rank 0)', `${points} points`);
  check(Number(await page.getAttribute('#chart-eval', 'data-points')) >= 3, 'the test-metrics chart has the evaluations');
  const canvases = await page.$$eval('.chart canvas', (cs) => cs.length);
  check(canvases === 4, 'four uPlot charts drawn', String(canvases));

  // How far behind the trainers the charts were: each update while the job ran, from the newest
  // point's trainer time to the moment the browser drew it (same machine clock). The first
  // update may show points from before the page opened.
  const updates = await page.evaluate(() => window.ternUpdates);
  const lags = updates.slice(1).map((u) => u.shown - u.newest);
  const maxLag = Math.max(...lags);
  const sorted = [...lags].sort((a, b) => a - b);
  const p50 = sorted[Math.floor(sorted.length / 2)];
  check(lags.length >= 5 && maxLag < 2.0, 'the charts update within 2 s of the trainers\' progress events',
    `${lags.length} updates, lag p50 ${p50?.toFixed(2)} s, max ${maxLag.toFixed(2)} s`);

  const ranks = await page.$$eval('#ranks tbody tr', (rows) => rows.map((r) => {
    const o = {};
    for (const td of r.querySelectorAll('td')) o[td.dataset.col] = td.textContent;
    return o;
  }));
  check(ranks.length === 2, 'the per-rank table has both ranks', JSON.stringify(ranks));
  for (const r of ranks) {
    check(r.state === 'SUCCEEDED' && r.step === '120/120' && /^(east|west)-[0-9]+$/.test(r.worker) && r.generation !== '' &&
      Number(r.samples_per_s) > 0 && /%$/.test(r.wait) && r.exit === '0',
    `rank ${r.rank}: SUCCEEDED at 120/120 on a worker, with samples/s, wait % and exit 0`, JSON.stringify(r));
  }
  const timeline = await page.$$eval('#timeline li', (li) => li.map((x) => x.className));
  check(timeline[0] === 'ev-submitted' && timeline.includes('ev-started') && timeline[timeline.length - 1] === 'ev-finished',
    'the timeline runs from submitted to finished', timeline.join(' '));
  check((await page.textContent('#spec')).includes('name: tiny'), 'the spec is shown');
  check((await page.textContent('#log')).length > 0, 'the rank log tail is shown');

  // ------------------------------------------------------------ 3. screenshot
  fs.mkdirSync(out, { recursive: true });
  const shot = path.join(out, 'dashboard-job.png');
  await page.screenshot({ path: shot, fullPage: true });
  check(fs.statSync(shot).size > 10000, 'screenshot saved', shot);

  // ------------------------------------------------------------ 4. cancel from the page
  const pending = cli('submit', filler);
  const pendingId = pending.job_id;
  await page.goto(`${base}/job?id=${encodeURIComponent(pendingId)}`);
  await until('the Cancel button', async () => page.isVisible('#cancel'), 10000);
  page.once('dialog', (d) => d.accept());
  await page.click('#cancel');
  await until('the state to read CANCELLED', async () => (await page.textContent('#state')) === 'CANCELLED', 10000);
  const reason = (await page.textContent('#reason')) || '';
  check(reason.includes('alice'), 'the Cancel button cancels the job as the logged-in user', reason);

  // ------------------------------------------------------------ 5. 50 finished jobs
  // 48 more, submitted 4 at a time with the CLI and cancelled through the API.
  for (let i = 0; i < 48; i += 4) {
    const batch = await Promise.all(Array.from({ length: 4 }, () => cliAsync('submit', filler)));
    const cancelled = await Promise.all(batch.map((f) => fetch(`${base}/api/v1/jobs/${f.job_id}/cancel`,
      { method: 'POST', headers: { Authorization: 'Bearer ' + userToken, 'X-Tern-Request': '1' } })));
    if (cancelled.some((r) => r.status !== 200)) throw new Error('cancel through the API: ' + cancelled.map((r) => r.status));
  }
  const all = await (await api('/api/v1/jobs?state=SUCCEEDED,CANCELLED', { Authorization: 'Bearer ' + userToken })).json();
  check(all.jobs.length === 50, '50 finished jobs', String(all.jobs.length));
  const loads = [];
  for (let i = 0; i < 3; i++) {
    const start = Date.now();
    await page.goto(base + '/jobs');
    await page.waitForSelector('body[data-loaded="1"]');
    loads.push((Date.now() - start) / 1000);
  }
  await page.screenshot({ path: path.join(out, 'dashboard-jobs.png') });
  const rows = await page.$$eval('#jobs tbody tr', (r) => r.length);
  check(rows === 50, 'the jobs page lists them', `${rows} rows`);
  check(Math.max(...loads) < 1.0, 'the jobs page loads in under 1 s with 50 jobs and 10 workers',
    loads.map((s) => s.toFixed(3) + ' s').join(', '));
  await page.selectOption('#state', 'SUCCEEDED');
  await until('the filter', async () => (await page.$$eval('#jobs tbody tr', (r) => r.length)) === 1, 5000);
  check(true, 'the state filter shows the one SUCCEEDED job');
  const startCluster = Date.now();
  await page.goto(base + '/cluster');
  await page.waitForSelector('body[data-loaded="1"]');
  const workers = await page.$$eval('tr[data-worker]', (r) => r.length);
  await page.screenshot({ path: path.join(out, 'dashboard-cluster.png'), fullPage: true });
  check(workers === 10, 'the cluster page shows 10 workers in 2 regions',
    `${workers} workers, ${((Date.now() - startCluster) / 1000).toFixed(3)} s`);
  check(pageErrors.length === 0, 'no script errors on any page', pageErrors.join('; '));
  fs.writeFileSync(path.join(out, 'dashboard-measurements.json'), JSON.stringify({
    chart_updates: lags.length, chart_lag_p50_s: p50, chart_lag_max_s: maxLag, jobs_page_load_s: loads,
  }, null, 1));
} catch (e) {
  check(false, 'browser test', e.stack || String(e));
} finally {
  if (browser) await browser.close().catch(() => {});
  if (up) {
    try {
      execFileSync(tern, ['cluster', 'down', cluster], { stdio: 'ignore', timeout: 60000 });
    } catch (e) {
      check(false, 'tern cluster down', String(e));
    }
  }
  if (failed === 0) fs.rmSync(dir, { recursive: true, force: true });
  else console.log(`kept ${dir} (logs under state/logs)`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

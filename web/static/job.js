// One job: live charts (uPlot) of loss, test metrics, samples/s and wait %, the per-rank table,
// the timeline of regroups, checkpoints and exits, a rank's log tail and the spec. Polls the
// API: the series every 500 ms while the job runs (so a chart shows a trainer's progress
// within about a second), the rest every second or two; once the job ended, one last round.
'use strict';
(() => {
  const id = new URLSearchParams(location.search).get('id') || '';
  const $ = (x) => document.getElementById(x);
  const enc = encodeURIComponent(id);
  document.title = 'tern · ' + id;
  $('title').textContent = 'Job ' + id;
  // (browser time shown, newest point's time) per chart update: the browser test's measure of
  // how far the charts lag behind the trainers.
  window.ternUpdates = [];

  const haveCharts = typeof uPlot === 'function';
  if (!haveCharts) tern.showError('uPlot is missing (scripts/setup.sh installs it): no charts');
  function chart(div, series, axes) {
    if (!haveCharts) return null;
    const el = $(div);
    const opts = {
      width: Math.max(300, el.clientWidth || 460), height: 200,
      scales: { x: { time: false } },
      legend: { live: false },
      axes: [{ label: 'step' }, ...axes],
      series: [{ label: 'step' }, ...series.map((s) => Object.assign({ width: 2, spanGaps: true, points: { show: false } }, s))],
    };
    return new uPlot(opts, [[], ...series.map(() => [])], el);
  }
  const charts = {
    loss: chart('chart-loss', [{ label: 'loss', stroke: '#d33' }], [{}]),
    eval: chart('chart-eval', [
      { label: 'test accuracy', stroke: '#27a', scale: 'acc', points: { show: true } },
      { label: 'test loss', stroke: '#a72', scale: 'tl', points: { show: true } }],
      [{ scale: 'acc' }, { scale: 'tl', side: 1, grid: { show: false } }]),
    rate: chart('chart-rate', [{ label: 'samples/s', stroke: '#2a6' }], [{}]),
    wait: chart('chart-wait', [{ label: 'wait %', stroke: '#86c' }], [{}]),
  };
  const column = (points, i) => points.map((p) => p[i]);
  function draw(name, div, points, columns) {
    const u = charts[name];
    $(div).dataset.points = String(points.length);
    if (!u) return;
    u.setData([column(points, 1), ...columns.map((c) => column(points, c))]);
  }

  let seriesVersion = -1;
  let state = '';
  async function refreshSeries() {
    const s = await tern.api(`/api/v1/jobs/${enc}/series`);
    if (s.version !== seriesVersion) {
      seriesVersion = s.version;
      const p = s.progress.points;  // [t, step, loss, samples_per_s, wait_pct, epoch]
      draw('loss', 'chart-loss', p, [2]);
      draw('rate', 'chart-rate', p, [3]);
      draw('wait', 'chart-wait', p, [4]);
      draw('eval', 'chart-eval', s.eval.points, [2, 3]);  // [t, step, test_accuracy, test_loss]
      if (p.length) window.ternUpdates.push({ shown: Date.now() / 1000, newest: p[p.length - 1][0], points: p.length });
    }
    return !tern.terminal(s.state);
  }

  const card = (label, value) => tern.el('div', { class: 'card' }, tern.el('div', { class: 'label', text: label }), tern.el('div', { class: 'value', text: value }));
  function metric(r, k) { return r.metrics && typeof r.metrics[k] === 'number' ? r.metrics[k] : undefined; }
  function rankRow(r) {
    const wait = metric(r, 'wait_s'), compute = metric(r, 'compute_s');
    const stale = metric(r, 'staleness'), ratio = metric(r, 'compression_ratio');
    const drop = metric(r, 'straggler_drop_share'), share = metric(r, 'straggler_share');
    const exited = r.state === 'SUCCEEDED' || r.state === 'FAILED';
    const cells = [
      ['rank', r.rank], ['worker', r.worker_id || '-'], ['region', r.region || '-'], ['state', null],
      ['generation', r.generation], ['step', r.total_steps > 0 ? `${r.step}/${r.total_steps}` : '-'],
      ['loss', r.step > 0 ? tern.num(r.loss, 4) : '-'], ['samples_per_s', r.step > 0 ? tern.num(r.samples_per_s) : '-'],
      ['wait', wait !== undefined && compute > 0 ? ((100 * wait) / (wait + compute)).toFixed(0) + '%' : '-'],
      ['staleness', stale !== undefined ? stale.toFixed(0) : '-'],
      ['compression', ratio > 0 ? ratio.toFixed(0) + 'x' : '-'],
      ['drop', drop !== undefined ? (100 * drop).toFixed(0) + '%' : '-'],
      ['share', share > 0 ? (100 * share).toFixed(1) + '%' : '-'],
      ['accuracy', tern.num(r.test_accuracy, 4)], ['exit', exited ? r.exit_code : '-']];
    return tern.el('tr', { 'data-rank': r.rank, class: r.member === false ? 'standby' : '' },
      ...cells.map(([k, v]) => k === 'state' ? tern.el('td', { 'data-col': k }, tern.state(r.state)) : tern.el('td', { 'data-col': k, text: v })));
  }

  let specShown = false;
  let world = 0;
  async function refreshJob() {
    const r = await tern.api(`/api/v1/jobs/${enc}`);
    const j = r.job;
    state = j.state;
    const st = $('state');
    st.textContent = j.state;
    st.className = 'state state-' + j.state.toLowerCase();
    $('reason').textContent = j.reason || '';
    $('cancel').hidden = tern.terminal(j.state);
    const cards = [card('name', j.name), card('ranks', j.members.length > 0 && j.members.length < j.world_size ? `${j.members.length} of ${j.world_size}` : j.world_size),
      card('progress', j.total_steps > 0 ? `${j.step}/${j.total_steps}` : '-'), card('loss', j.total_steps > 0 ? tern.num(j.loss, 4) : '-'),
      card('generation', j.generation), card('recoveries', j.recoveries)];
    if (j.state === 'RUNNING') cards.push(card('samples/s', tern.num(j.samples_per_s)), card('ETA', j.eta_s >= 0 ? tern.age(j.eta_s) : '-'));
    if (j.test_accuracy !== undefined) cards.push(card('accuracy', tern.num(j.test_accuracy, 4)));
    if (j.checkpoint_step !== undefined) cards.push(card('checkpoint', 'step ' + j.checkpoint_step));
    cards.push(card('age', tern.age(r.now - j.created_at)));
    $('summary').replaceChildren(...cards);
    document.querySelector('#ranks tbody').replaceChildren(...j.ranks.map(rankRow));
    if (!specShown) {
      $('spec').textContent = r.spec_yaml;
      specShown = true;
    }
    if (world !== j.world_size) {
      world = j.world_size;
      $('log-rank').replaceChildren(...Array.from({ length: world }, (_, r) => tern.el('option', { value: r }, 'rank ' + r)));
    }
    document.body.dataset.state = j.state;
    return !tern.terminal(j.state);
  }

  const when = (t, t0) => (t0 > 0 ? '+' + (t - t0).toFixed(1) + ' s' : new Date(t * 1000).toLocaleTimeString());
  async function refreshTimeline() {
    const r = await tern.api(`/api/v1/jobs/${enc}/timeline`);
    const t0 = r.events.length ? r.events[0].t : 0;
    $('timeline').replaceChildren(...r.events.map((e) => {
      let what = e.kind;
      if (e.kind === 'started') what = `started on ${e.world} ranks`;
      else if (e.kind === 'checkpoint') what = `checkpoint of step ${e.step} committed`;
      else if (e.kind === 'exit') what = `rank ${e.rank} exited with code ${e.exit_code}`;
      else if (e.kind === 'error') what = `rank ${e.rank}: ${e.message || 'error'}`;
      else if (e.kind === 'grow' || e.kind === 'shrink' || e.kind === 'regroup') {
        what = `${e.kind} to ${e.world} ranks, generation ${e.generation}` +
          (e.lost > 0 ? `, decided in ${(e.decided - e.lost).toFixed(2)} s` : '') +
          (e.recovery_s !== undefined ? `, training again after ${e.recovery_s.toFixed(2)} s` : ', not training yet');
      } else if (e.kind === 'finished') what = `${e.state}: ${e.message || ''}`;
      return tern.el('li', { class: 'ev-' + e.kind }, tern.el('span', { class: 'when', text: when(e.t, t0) }), what);
    }));
    return !tern.terminal(state);
  }

  async function refreshLog() {
    const rank = $('log-rank').value || 0;
    const r = await tern.api(`/api/v1/jobs/${enc}/logs?rank=${rank}&bytes=16384`);
    const pre = $('log');
    const bottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = r.data || '(no output yet)';
    if (bottom) pre.scrollTop = pre.scrollHeight;
    return !tern.terminal(state);
  }
  $('log-rank').addEventListener('change', () => refreshLog().catch(tern.showError));

  $('cancel').addEventListener('click', async () => {
    if (!confirm(`Cancel job ${id}?`)) return;
    try {
      await tern.api(`/api/v1/jobs/${enc}/cancel`, { method: 'POST', headers: { 'X-Tern-Request': '1' } });
      await refreshJob();
    } catch (e) {
      tern.showError(e);
    }
  });

  // Once the job ended each loop runs one more time (the final numbers), then stops.
  function loop(fn, ms) {
    let last = false;
    tern.poll(async () => {
      const more = await fn();
      if (more) return true;
      if (last) return false;
      last = true;
      return true;
    }, ms);
  }
  loop(refreshJob, 1000);
  loop(refreshSeries, 500);
  loop(refreshTimeline, 2000);
  loop(refreshLog, 2000);
})();

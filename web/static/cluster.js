// The cluster page: workers by region with state, slots, heartbeat age and their tasks.
'use strict';
(() => {
  const card = (label, value) => tern.el('div', { class: 'card' }, tern.el('div', { class: 'label', text: label }), tern.el('div', { class: 'value', text: value }));
  async function refresh() {
    const c = await tern.api('/api/v1/cluster');
    document.getElementById('title').textContent = 'Cluster ' + c.name;
    document.getElementById('summary').replaceChildren(
      card('workers ready', `${c.ready_workers} / ${c.workers.length}`),
      card('slots used', `${c.used_slots} / ${c.slots}`),
      ...Object.entries(c.jobs).map(([s, n]) => card(s.toLowerCase(), n)));
    const regions = new Map();
    for (const w of c.workers) {
      if (!regions.has(w.region)) regions.set(w.region, []);
      regions.get(w.region).push(w);
    }
    const sections = [...regions.entries()].sort().map(([region, workers]) => {
      const rows = workers.map((w) => tern.el('tr', { 'data-worker': w.worker_id },
        tern.el('td', { text: w.worker_id }), tern.el('td', { text: w.host }), tern.el('td', {}, tern.state(w.state)),
        tern.el('td', { text: `${w.used_slots}/${w.slots}` }), tern.el('td', { text: w.cores || '-' }),
        tern.el('td', { text: w.heartbeat_age_s === undefined ? '-' : w.heartbeat_age_s.toFixed(1) + ' s' }),
        tern.el('td', {}, ...w.tasks.map((t) => tern.el('a', { href: '/job?id=' + encodeURIComponent(t.job_id), class: 'task' },
          `${t.job_id} r${t.rank} g${t.generation}`)))));
      return tern.el('section', {}, tern.el('h2', { text: `Region ${region} (${workers.length} workers)` }),
        tern.el('table', { class: 'grid' },
          tern.el('thead', {}, tern.el('tr', {}, ...['Worker', 'Host', 'State', 'Slots', 'Cores', 'Heartbeat age', 'Tasks (job, rank, generation)'].map((h) => tern.el('th', { text: h })))),
          tern.el('tbody', {}, ...rows)));
    });
    document.getElementById('regions').replaceChildren(...sections);
    document.body.dataset.loaded = '1';
  }
  tern.poll(refresh, 2000);
})();

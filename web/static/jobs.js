// The jobs page: every job with its state, progress, throughput and accuracy; filter by state.
'use strict';
(() => {
  const select = document.getElementById('state');
  const params = new URLSearchParams(location.search);
  select.value = (params.get('state') || '').toUpperCase();
  select.addEventListener('change', () => {
    const q = select.value ? '?state=' + select.value : '';
    history.replaceState(null, '', '/jobs' + q);
    refresh();
  });
  const body = document.querySelector('#jobs tbody');

  async function refresh() {
    const q = select.value ? '?state=' + encodeURIComponent(select.value) : '';
    const r = await tern.api('/api/v1/jobs' + q);
    const rows = r.jobs.slice().reverse().map((j) => {
      const link = tern.el('a', { href: '/job?id=' + encodeURIComponent(j.job_id) }, j.job_id);
      const rate = j.state === 'RUNNING' ? tern.num(j.samples_per_s) : tern.num(j.summary.samples_per_s);
      return tern.el('tr', { 'data-job': j.job_id, 'data-state': j.state },
        tern.el('td', {}, link), tern.el('td', { text: j.name }), tern.el('td', {}, tern.state(j.state)),
        tern.el('td', { text: j.world_size }), tern.el('td', {}, tern.progress(j)),
        tern.el('td', { text: j.total_steps > 0 ? tern.num(j.loss, 4) : '-' }),
        tern.el('td', { text: rate }),
        tern.el('td', { text: tern.num(j.test_accuracy, 4) }),
        tern.el('td', { text: tern.age(r.now - j.created_at) }),
        tern.el('td', { class: 'reason', text: (j.reason || '').split('\n')[0] }));
    });
    body.replaceChildren(...rows);
    document.getElementById('count').textContent = `${r.jobs.length} job${r.jobs.length === 1 ? '' : 's'}`;
    document.body.dataset.loaded = '1';
  }
  tern.poll(refresh, 2000);
})();

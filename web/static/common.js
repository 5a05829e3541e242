// Shared by the dashboard's pages: the API client, formatting and the navigation bar.
'use strict';

const tern = (() => {
  // GET (or POST) an API path; a 401 sends the browser to the login form and back.
  async function api(path, options = {}) {
    const r = await fetch(path, Object.assign({ credentials: 'same-origin', cache: 'no-store' }, options));
    if (r.status === 401) {
      location.href = '/login?next=' + encodeURIComponent(location.pathname + location.search);
      throw new Error('not logged in');
    }
    const body = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }

  // An element with attributes and children (text children are text nodes: never parsed).
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  const num = (v, digits = 0) => (typeof v === 'number' && isFinite(v) ? v.toFixed(digits) : '-');
  function age(seconds) {
    if (!(seconds >= 0)) return '-';
    if (seconds < 60) return seconds.toFixed(0) + ' s';
    if (seconds < 3600) return (seconds / 60).toFixed(0) + ' min';
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + ' h';
    return (seconds / 86400).toFixed(1) + ' d';
  }
  function bytes(b) {
    if (!(b > 0)) return '-';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (b >= 1000 && i < units.length - 1) { b /= 1000; i++; }
    return b.toFixed(i ? 1 : 0) + ' ' + units[i];
  }
  const terminal = (s) => s === 'SUCCEEDED' || s === 'FAILED' || s === 'CANCELLED';
  function state(s) { return el('span', { class: 'state state-' + String(s).toLowerCase(), text: s }); }
  function progress(job) {
    if (!(job.total_steps > 0)) return '-';
    const pct = Math.min(100, (100 * job.step) / job.total_steps);
    const bar = el('div', { class: 'progress' }, el('div', { style: 'width:' + pct.toFixed(1) + '%' }));
    return el('span', {}, bar, `${job.step}/${job.total_steps}`);
  }
  function showError(e) {
    const p = document.getElementById('error');
    if (!p) return;
    p.hidden = !e;
    p.textContent = e ? String(e.message || e) : '';
  }
  function nav() {
    const n = document.getElementById('nav');
    if (!n) return;
    const here = location.pathname;
    n.append(el('span', { class: 'brand', text: 'tern' }));
    for (const [href, label] of [['/jobs', 'Jobs'], ['/cluster', 'Cluster']]) {
      n.append(el('a', { href, class: here === href ? 'here' : '' }, label));
    }
    const out = el('form', { method: 'post', action: '/logout', class: 'logout' }, el('button', { type: 'submit' }, 'Log out'));
    n.append(out);
  }
  // Calls `fn` now and then every `ms` until it returns false; errors are shown, not fatal.
  function poll(fn, ms) {
    let again = true;
    const tick = async () => {
      try {
        again = (await fn()) !== false;
        showError(null);
      } catch (e) {
        showError(e);
      }
      if (again) setTimeout(tick, ms);
    };
    tick();
  }
  document.addEventListener('DOMContentLoaded', nav);
  return { api, el, num, age, bytes, terminal, state, progress, showError, poll };
})();

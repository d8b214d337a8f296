// threadline inspector. Plain JavaScript, no framework, no build step.
//
// It uses only the public API, with the login key the user typed. The key is
// kept in sessionStorage (this tab only): never in a URL, never in a cookie.
// Everything from the server is put on the page with textContent, never as
// HTML, so a message cannot inject markup or script (and the CSP forbids
// inline script anyway).
'use strict';

(function () {
  const KEY_SLOT = 'threadline.key';
  const RECENT_SLOT = 'threadline.recentTurnThreads';
  const PAGE = 50; // messages per history page
  const LIST_PAGE = 20; // threads per list page
  const BEYOND = Number.MAX_SAFE_INTEGER; // an `after` past every seq: the thread, no messages

  const $ = (id) => document.getElementById(id);

  /** An error answered by the server (the envelope), or a network failure. */
  class ApiError extends Error {
    constructor(status, code, message, field, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
      this.retryAfter = retryAfter;
    }
  }

  const state = {
    key: null,
    me: null, // {user_id, agents: [...]}
    threads: { aid: null, status: 'active', offset: 0, rows: [], total: 0, hasMore: false, search: '' },
    inbox: null, // the thread list's live socket
    thread: null, // the open thread view
    serverTimer: null,
    seamChecks: 0, // resumes checked against the server (for the tests)
    webhooks: { timer: null, shown: null },
  };

  // ---------------------------------------------------------------- API

  async function api(method, path, body, extraHeaders) {
    const headers = Object.assign({ Authorization: 'Bearer ' + state.key }, extraHeaders || {});
    const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'NETWORK', 'The server did not answer. Is it running?');
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      const apiErr = new ApiError(res.status, err.code || 'HTTP_' + res.status,
        err.message || res.statusText || 'request failed', err.field, err.retry_after);
      if (res.status === 401 && state.key && path !== '/api/acsp/me') {
        // The key was revoked (or the server restarted on another database).
        signOut('This login key was revoked (or the server now runs on another database): it is no longer accepted.');
      }
      throw apiErr;
    }
    return data;
  }

  function describe(err) {
    if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
    if (err.status === 429) {
      const wait = err.retryAfter ? ' Try again in ' + err.retryAfter + ' s.' : '';
      return 'Too many requests for this key (rate limit).' + wait;
    }
    return err.message + (err.code && err.status ? ' (' + err.status + ' ' + err.code + ')' : '');
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    }
    return q.toString();
  }

  function getThread(id, params) {
    return api('GET', '/api/acsp/thread/' + encodeURIComponent(id) + '?' + query(params));
  }

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function setError(node, message) {
    node.textContent = message || '';
    show(node, Boolean(message));
  }

  function banner(message) {
    setError($('banner'), message);
  }

  /** `text` between the Unicode isolate marks (FSI … PDI), for plain text
   * that joins a name or subject to other words (an option, the tab's
   * title): right-to-left text or a bidi control in it then cannot reorder
   * what follows. In the DOM, a <bdi> does the same. */
  function isolate(text) {
    return '\u2068' + text + '\u2069';
  }

  function shortAid(aid) {
    return aid && aid.length > 14 ? aid.slice(0, 8) + '…' + aid.slice(-4) : aid || '';
  }

  function agentName(aid) {
    const a = state.me && state.me.agents.find((x) => x.aid === aid);
    return a ? a.name : null;
  }

  function ownsAid(aid) {
    return Boolean(state.me && state.me.agents.some((x) => x.aid === aid));
  }

  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString();
  }

  function ago(iso) {
    if (!iso) return '—';
    const secs = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (!Number.isFinite(secs)) return iso;
    if (secs < 5) return 'just now';
    if (secs < 60) return secs + ' s ago';
    if (secs < 3600) return Math.floor(secs / 60) + ' min ago';
    if (secs < 86400) return Math.floor(secs / 3600) + ' h ago';
    return Math.floor(secs / 86400) + ' d ago';
  }

  function duration(secs) {
    const d = Math.floor(secs / 86400);
    const h = Math.floor((secs % 86400) / 3600);
    const m = Math.floor((secs % 3600) / 60);
    const s = secs % 60;
    return (d ? d + ' d ' : '') + (d || h ? h + ' h ' : '') + (d || h || m ? m + ' min ' : '') + s + ' s';
  }

  async function copy(text, button) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (e) {
      ok = false;
    }
    const label = button.textContent;
    button.textContent = ok ? 'Copied' : 'Copy failed: select and copy';
    setTimeout(() => { button.textContent = label; }, 1500);
  }

  // ---------------------------------------------------------------- sign in

  async function signIn(key) {
    state.key = key;
    try {
      state.me = await api('GET', '/api/acsp/me');
    } catch (e) {
      state.key = null;
      state.me = null;
      throw e;
    }
    sessionStorage.setItem(KEY_SLOT, key);
    if (!state.threads.aid || !ownsAid(state.threads.aid)) {
      state.threads.aid = state.me.agents.length ? state.me.agents[0].aid : null;
    }
  }

  function signOut(message) {
    // Signed out by the server (a revoked key), not by the user: signing in
    // again comes back to what was open.
    if (message && location.hash && location.hash !== '#/signin') state.afterSignIn = location.hash;
    sessionStorage.removeItem(KEY_SLOT);
    state.key = null;
    state.me = null;
    leaveThread();
    closeInbox();
    stopWebhooksTimer();
    state.webhooks.shown = null;
    show($('webhook-secret'), false);
    state.threads = { aid: null, status: 'active', offset: 0, rows: [], total: 0, hasMore: false, search: '' };
    for (const id of ['agents-body', 'threads-body', 'messages', 'timeline', 'batches', 'signals', 'webhooks-list']) {
      $(id).replaceChildren();
    }
    $('signin-key').value = '';
    banner('');
    if (location.hash !== '#/signin') location.hash = '#/signin';
    else route();
    if (message) setError($('signin-error'), message);
  }

  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = $('signin-key').value.trim();
    const err = $('signin-error');
    if (!key) {
      setError(err, 'Enter a login key.');
      $('signin-key').focus();
      return;
    }
    setError(err, '');
    $('signin-submit').disabled = true;
    try {
      await signIn(key);
      $('signin-key').value = '';
      const next = state.afterSignIn || '#/threads';
      state.afterSignIn = null;
      if (location.hash === next) route();
      else location.hash = next;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        setError(err, 'That login key was not accepted. Check that you copied all of it, and that it was not revoked.');
      } else {
        setError(err, 'Could not sign in: ' + describe(e));
      }
      $('signin-key').focus();
    } finally {
      $('signin-submit').disabled = false;
    }
  });

  $('sign-out').addEventListener('click', () => signOut());

  // ---------------------------------------------------------------- routing

  const VIEWS = ['signin', 'agents', 'threads', 'thread', 'turn', 'webhooks', 'server'];

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    const name = parts[0] || '';
    if (name === 'thread' && parts[1]) {
      const as = parts[2] === 'as' && parts[3] ? parts[3] : null;
      return { view: 'thread', id: parts[1], as };
    }
    if (VIEWS.includes(name)) return { view: name };
    return { view: 'threads' };
  }

  function activate(view) {
    for (const v of VIEWS) show($('view-' + v), v === view);
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.view === view || (view === 'thread' && a.dataset.view === 'threads')) {
        a.setAttribute('aria-current', 'page');
      } else {
        a.removeAttribute('aria-current');
      }
    }
    const signedIn = Boolean(state.key);
    show($('nav'), signedIn);
    show($('sign-out'), signedIn);
    show($('whoami'), signedIn);
    if (signedIn && state.me) $('whoami').textContent = state.me.user_id;
  }

  async function route() {
    const r = parseRoute();
    if (!state.key) {
      // Come back here once signed in (a shared link to a thread, say).
      if (r.view !== 'signin' && location.hash) state.afterSignIn = location.hash;
      activate('signin');
      document.title = 'Sign in · threadline inspector';
      $('signin-key').focus();
      return;
    }
    if (r.view === 'signin') {
      location.hash = '#/threads';
      return;
    }
    banner('');
    if (r.view !== 'thread') leaveThread();
    if (r.view !== 'threads') closeInbox();
    if (r.view !== 'server') stopServerTimer();
    if (r.view !== 'webhooks') stopWebhooksTimer();
    const changed = $('view-' + r.view).hidden;
    activate(r.view);
    document.title = r.view + ' · threadline inspector';
    // A new view: move keyboard focus to its heading, as a page load would.
    if (changed) focusHeading(r.view);
    try {
      if (r.view === 'agents') renderAgents();
      else if (r.view === 'threads') await showThreads();
      else if (r.view === 'thread') await openThread(r.id, r.as);
      else if (r.view === 'turn') renderRecentTurn();
      else if (r.view === 'webhooks') startWebhooksTimer();
      else if (r.view === 'server') startServerTimer();
    } catch (e) {
      if (state.key) banner(describe(e));
    }
  }

  function focusHeading(view) {
    const h = $('view-' + view).querySelector('h1');
    if (!h) return;
    h.tabIndex = -1;
    h.focus({ preventScroll: true });
  }

  window.addEventListener('hashchange', route);

  // The skip link must not change the hash (the hash is the route).
  document.querySelector('.skip').addEventListener('click', (ev) => {
    ev.preventDefault();
    $('main').focus();
  });

  // ---------------------------------------------------------------- agents

  function renderAgents() {
    const body = $('agents-body');
    body.replaceChildren();
    $('agents-user').textContent = state.me.user_id;
    for (const a of state.me.agents) {
      const copyBtn = el('button', { type: 'button', class: 'small-btn', 'aria-label': 'Copy the AID of ' + a.name, text: 'Copy AID' });
      copyBtn.addEventListener('click', () => copy(a.aid, copyBtn));
      body.append(el('tr', { dataset: { aid: a.aid } },
        el('td', { 'data-label': 'Name', class: 'agent-name', text: a.name }),
        el('td', { 'data-label': 'AID' }, el('code', { class: 'agent-aid', text: a.aid })),
        el('td', { 'data-label': 'Created', text: fmtTime(a.created_at) }),
        el('td', {}, copyBtn, ' ',
          el('a', { href: '#/threads', onclick: () => { state.threads.aid = a.aid; state.threads.offset = 0; }, text: 'Threads' }))));
    }
    show($('agents-empty'), state.me.agents.length === 0);
  }

  $('copy-user').addEventListener('click', (ev) => copy(state.me.user_id, ev.currentTarget));

  // ---------------------------------------------------------------- threads

  function fillAgentSelect(select, agents, selected) {
    select.replaceChildren(...agents.map((a) =>
      el('option', { value: a.aid, selected: a.aid === selected }, isolate(a.name) + ' (' + shortAid(a.aid) + ')')));
  }

  async function showThreads() {
    const t = state.threads;
    fillAgentSelect($('threads-agent'), state.me.agents, t.aid);
    $('threads-status').value = t.status;
    $('threads-search').value = t.search;
    if (!t.aid) {
      $('threads-body').replaceChildren();
      setError($('threads-empty'), 'This account has no agents, so it has no agent threads.');
      return;
    }
    await loadThreads();
    openInbox(t.aid);
  }

  async function loadThreads() {
    const t = state.threads;
    const page = await api('GET', '/api/acsp/threads?' + query({ aid: t.aid, status: t.status, limit: LIST_PAGE, offset: t.offset }));
    t.rows = page.threads;
    t.total = page.total;
    t.hasMore = page.has_more;
    renderThreads();
  }

  function renderThreads() {
    const t = state.threads;
    const needle = t.search.trim().toLowerCase();
    const rows = needle ? t.rows.filter((r) => (r.subject || '').toLowerCase().includes(needle)) : t.rows;
    // Rows are kept per thread and updated in place, so a live refresh
    // neither moves keyboard focus nor invalidates what a user points at.
    const body = $('threads-body');
    const keep = new Map();
    for (const tr of body.children) keep.set(tr.dataset.threadId, tr);
    rows.forEach((r, i) => {
      const tr = threadRow(keep.get(r.id), r, t.aid);
      keep.delete(r.id);
      if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    });
    for (const stale of keep.values()) stale.remove();
    let empty = '';
    if (t.rows.length === 0) empty = 'No ' + (t.status === 'all' ? '' : t.status + ' ') + 'threads for this agent.';
    else if (rows.length === 0) empty = 'No subject on this page matches “' + t.search + '”.';
    $('threads-empty').textContent = empty;
    show($('threads-empty'), Boolean(empty));
    const from = t.rows.length ? t.offset + 1 : 0;
    $('threads-range').textContent = from + '–' + (t.offset + t.rows.length) + ' of ' + t.total;
    $('threads-prev').disabled = t.offset === 0;
    $('threads-next').disabled = !t.hasMore;
  }

  /** Makes (or updates) the row of one thread, seen from agent `aid`. */
  function threadRow(tr, r, aid) {
    if (!tr || tr.dataset.aid !== aid) {
      tr = el('tr', { dataset: { threadId: r.id, aid } },
        el('td', { 'data-label': 'Subject' }, el('a', { class: 'thread-link', href: '#/thread/' + encodeURIComponent(r.id) + '/as/' + encodeURIComponent(aid) })),
        el('td', { 'data-label': 'With' }, el('bdi', { class: 'peer-name' }), ' ', el('code', { class: 'muted peer-aid' })),
        el('td', { 'data-label': 'Status' }, el('span', { class: 'badge' })),
        el('td', { 'data-label': 'Unread', class: 'num unread' }, el('span')),
        el('td', { 'data-label': 'Messages', class: 'num count' }),
        el('td', { 'data-label': 'Last activity', class: 'activity' }));
    }
    const set = (node, text) => { if (node.textContent !== text) node.textContent = text; };
    set(tr.querySelector('.thread-link'), r.subject || '(no subject)');
    set(tr.querySelector('.peer-name'), r.peer_name || '');
    const peer = tr.querySelector('.peer-aid');
    set(peer, shortAid(r.peer_aid));
    peer.title = r.peer_aid || '';
    const badge = tr.querySelector('.badge');
    set(badge, r.status);
    badge.dataset.status = r.status;
    const unread = tr.querySelector('.unread');
    unread.dataset.unread = String(r.unread_count);
    const span = unread.firstChild;
    span.className = r.unread_count > 0 ? 'unread-badge' : 'unread-zero';
    span.setAttribute('aria-label', r.unread_count + ' unread');
    set(span, String(r.unread_count));
    set(tr.querySelector('.count'), String(r.message_count));
    const activity = tr.querySelector('.activity');
    activity.title = fmtTime(r.last_message_at || r.created_at);
    set(activity, ago(r.last_message_at || r.created_at));
    return tr;
  }

  function reloadThreads() {
    loadThreads().catch((e) => banner(describe(e)));
  }

  $('threads-agent').addEventListener('change', (ev) => {
    state.threads.aid = ev.target.value;
    state.threads.offset = 0;
    reloadThreads();
    openInbox(state.threads.aid);
  });
  $('threads-status').addEventListener('change', (ev) => {
    state.threads.status = ev.target.value;
    state.threads.offset = 0;
    reloadThreads();
  });
  // 'input' as one types; 'change' and 'search' for clearing (the search
  // box's ✕, or a value set programmatically).
  for (const type of ['input', 'change', 'search']) {
    $('threads-search').addEventListener(type, (ev) => {
      if (state.threads.search === ev.target.value) return;
      state.threads.search = ev.target.value;
      renderThreads();
    });
  }
  $('threads-refresh').addEventListener('click', reloadThreads);
  $('threads-prev').addEventListener('click', () => {
    state.threads.offset = Math.max(0, state.threads.offset - LIST_PAGE);
    reloadThreads();
  });
  $('threads-next').addEventListener('click', () => {
    state.threads.offset += LIST_PAGE;
    reloadThreads();
  });

  // The selected agent's inbox socket: any event refreshes the list (at most
  // every few seconds, to stay well inside the per-key rate limit).
  function openInbox(aid) {
    closeInbox();
    const inbox = { aid, ws: null, timer: null, retryTimer: null, clock: null, last: 0, stopped: false, retry: 1000, dropped: false };
    state.inbox = inbox;
    const live = $('threads-live');
    const connect = async () => {
      if (inbox.stopped) return;
      live.dataset.state = 'connecting';
      live.textContent = 'connecting…';
      let grant;
      try {
        grant = await api('POST', '/api/acsp/realtime/open', { aid });
      } catch (e) {
        if (inbox.stopped || !state.key) return;
        // A server that is down or restarting (or busy) comes back: keep
        // trying, as after a dropped socket. Any other refusal stands.
        if (e instanceof ApiError && (e.status === 0 || e.status === 429 || e.status >= 500)) {
          retry('reconnecting… (' + describe(e) + ')');
        } else {
          live.dataset.state = 'off';
          live.textContent = 'not live: ' + describe(e);
        }
        return;
      }
      if (inbox.stopped) return;
      const ws = new WebSocket(grant.realtime.connect_url);
      inbox.ws = ws;
      ws.onopen = () => {
        const resumed = inbox.retry !== 1000 || inbox.dropped;
        inbox.retry = 1000;
        inbox.dropped = false;
        live.dataset.state = 'live';
        live.textContent = '● live';
        // What changed while the socket was down sent no event to this one.
        if (resumed) scheduleRefresh();
      };
      ws.onmessage = () => scheduleRefresh();
      ws.onclose = (ev) => {
        if (inbox.stopped) return;
        if (ev.code === 4001) {
          signOut('This login key was revoked.');
          return;
        }
        inbox.dropped = true;
        retry('reconnecting…');
        scheduleRefresh();
      };
    };
    const retry = (text) => {
      live.dataset.state = 'reconnecting';
      live.textContent = text;
      clearTimeout(inbox.retryTimer);
      inbox.retryTimer = setTimeout(connect, inbox.retry);
      inbox.retry = Math.min(inbox.retry * 2, 30000);
    };
    const scheduleRefresh = () => {
      if (inbox.timer) return;
      const wait = Math.max(300, 4000 - (Date.now() - inbox.last));
      inbox.timer = setTimeout(() => {
        inbox.timer = null;
        inbox.last = Date.now();
        if (!inbox.stopped) reloadThreads();
      }, wait);
    };
    // "Last activity" is relative ("2 min ago"): keep it true while the
    // list stays open with nothing new (no request, only the rows redrawn).
    inbox.clock = setInterval(() => {
      if (!inbox.stopped) renderThreads();
    }, 10000);
    connect();
  }

  function closeInbox() {
    const inbox = state.inbox;
    if (!inbox) return;
    inbox.stopped = true;
    clearTimeout(inbox.timer);
    clearTimeout(inbox.retryTimer);
    clearInterval(inbox.clock);
    if (inbox.ws) inbox.ws.close(1000);
    state.inbox = null;
    $('threads-live').dataset.state = 'off';
    $('threads-live').textContent = '';
  }

  // ---------------------------------------------------------------- one thread

  function leaveThread() {
    const t = state.thread;
    if (!t) return;
    t.stopped = true;
    clearTimeout(t.retryTimer);
    clearTimeout(t.markTimer);
    clearInterval(t.clock);
    clearTimeout(t.turnsTimer);
    if (t.ws) t.ws.close(1000);
    state.thread = null;
  }

  /** Reads the thread (no messages) as whichever owned agent may read it. */
  async function findReader(id, as) {
    if (as) return { aid: as, page: await getThread(id, { aid: as, after: BEYOND, limit: 1 }) };
    try {
      return { aid: null, page: await getThread(id, { after: BEYOND, limit: 1 }) };
    } catch (e) {
      if (!(e instanceof ApiError) || e.field !== 'aid') throw e;
    }
    let last = null;
    for (const a of state.me.agents) {
      try {
        return { aid: a.aid, page: await getThread(id, { aid: a.aid, after: BEYOND, limit: 1 }) };
      } catch (e) {
        last = e;
        if (!(e instanceof ApiError) || e.status !== 404) throw e;
      }
    }
    throw last || new ApiError(404, 'NOT_FOUND', 'thread not found');
  }

  async function openThread(id, as) {
    if (state.thread && state.thread.id === id && state.thread.as === as) return;
    leaveThread();
    const t = {
      id, as, aid: null, kind: null, view: null, seen: new Set(), lowest: null, highest: 0,
      loadingOlder: false, ws: null, stopped: false, retry: 500, retryTimer: null,
      markTimer: null, marked: 0, parts: new Map(), epoch: null, clock: null,
      turns: new Map(), turnsTimer: null, turnsAt: 0,
      // Each reload of the view from the server (after a restore) starts a
      // new generation: an older read that lands later is dropped.
      gen: 0, sentAfter: 0, readyOnce: false, needsLoad: false, gone: false,
    };
    state.thread = t;
    notice('');
    $('messages').replaceChildren();
    $('timeline').replaceChildren();
    $('batches').replaceChildren();
    $('signals').replaceChildren();
    setError($('post-error'), '');
    setError($('respond-error'), '');
    show($('typing'), false);
    setLive('connecting');
    $('thread-title').textContent = 'Thread';
    $('thread-id').textContent = id;

    const { aid, page } = await findReader(id, as);
    if (t.stopped) return;
    t.aid = aid;
    t.view = page.thread;
    t.kind = page.thread.creator_aid ? 'acsp' : 'turn';
    if (t.kind === 'turn') rememberTurnThread(id);
    renderThreadHead();
    setupComposer();

    if (!(await loadLatest(t, page.thread.message_count))) return;
    t.clock = setInterval(renderTimeline, 1000);
    connectThread(t);
    if (t.kind === 'turn') refreshTurns(t);
  }

  /** Shows the newest page of messages, read as the agent (which raises its
   * read mark); `count` is the thread's message count (its last seq), read
   * again from the server when not given. False if the view was left. */
  async function loadLatest(t, count) {
    if (count === undefined) {
      const head = await getThread(t.id, { aid: t.aid, after: BEYOND, limit: 1 });
      if (t.stopped) return false;
      t.view = head.thread;
      renderStatus();
      count = head.thread.message_count;
    }
    const after = Math.max(0, count - PAGE);
    const latest = await getThread(t.id, { aid: t.aid, after, limit: PAGE });
    if (t.stopped) return false;
    t.lowest = after + 1;
    addMessages(latest.messages, 'append');
    t.marked = t.highest;
    renderReading();
    updateOlderButton();
    const hist = $('history');
    hist.scrollTop = hist.scrollHeight;
    return true;
  }

  /** A note above the thread about what the page did on its own ('' hides it). */
  function notice(text) {
    $('thread-notice-text').textContent = text;
    show($('thread-notice'), Boolean(text));
  }

  $('thread-notice-dismiss').addEventListener('click', () => notice(''));

  function renderThreadHead() {
    const t = state.thread;
    const v = t.view;
    if (t.kind === 'acsp') {
      const names = [v.creator_aid, v.target_aid].map((a) => agentName(a) || shortAid(a));
      // Each name in its own <bdi>: a subject or a name with right-to-left
      // text or a bidi control cannot reorder the others.
      $('thread-title').replaceChildren(el('bdi', { class: 'subject', text: v.subject || '(no subject)' }), ' — ',
        el('bdi', { class: 'party', text: names[0] }), ' ↔ ', el('bdi', { class: 'party', text: names[1] }));
      document.title = isolate(v.subject || '(no subject)') + ' — ' + names.map(isolate).join(' ↔ ') + ' · threadline inspector';
      $('thread-kind').textContent = 'agent thread';
    } else {
      $('thread-title').replaceChildren(el('bdi', { class: 'subject', text: v.subject || 'Turn-taking thread' }));
      document.title = isolate(v.subject || 'Turn-taking thread') + ' · threadline inspector';
      $('thread-kind').textContent = 'turn-taking';
    }
    const home = t.kind === 'turn' ? 'turn' : 'threads';
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.view === home) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    $('thread-back').href = '#/' + home;
    $('thread-back').textContent = t.kind === 'turn' ? '← Turn-taking' : '← Threads';
    renderStatus();
  }

  function renderStatus() {
    const t = state.thread;
    const status = t.gone ? 'deleted' : t.view.status;
    const badge = $('thread-status');
    badge.textContent = status;
    badge.dataset.status = status;
    // Turn-taking threads have no agent to act as, so no status route.
    show($('thread-actions'), t.kind === 'acsp' && Boolean(statusActor()));
    for (const b of $('thread-actions').querySelectorAll('button')) {
      b.disabled = b.dataset.status === status;
    }
    const active = status === 'active';
    show($('post-closed'), !active && !t.gone);
    $('post-send').disabled = !canPost(t);
    $('respond-send').disabled = !canPost(t);
    if (t.gone) {
      show($('thread-actions'), false);
    }
  }

  /** Whether the thread takes new messages, as far as this page knows. */
  function canPost(t) {
    return !t.gone && t.view.status === 'active';
  }

  function renderReading() {
    const t = state.thread;
    $('thread-reading').textContent = t.kind === 'acsp' && t.aid
      ? 'reading as ' + (agentName(t.aid) || shortAid(t.aid)) + ' · read up to #' + t.marked
      : '';
  }

  function statusActor() {
    const t = state.thread;
    if (t.aid) return t.aid;
    return [t.view.creator_aid, t.view.target_aid].find(ownsAid) || null;
  }

  function setupComposer() {
    const t = state.thread;
    const acsp = t.kind === 'acsp';
    show($('post-as-row'), acsp);
    show($('sender-row'), !acsp);
    show($('turn-panel'), !acsp);
    $('view-thread').querySelector('.thread-grid').classList.toggle('solo', acsp);
    if (acsp) {
      const owned = [t.view.creator_aid, t.view.target_aid].filter(ownsAid);
      fillAgentSelect($('post-as'), owned.map((aid) => ({ aid, name: agentName(aid) })), t.aid || owned[0]);
      $('post-content').placeholder = 'Write a message';
    } else {
      $('post-content').placeholder = 'An inbound message (submit_messages): the server decides whether the agent speaks';
    }
  }

  function setLive(s, detail) {
    const live = $('thread-live');
    live.dataset.state = s;
    live.textContent = { live: '● live', connecting: 'connecting…', reconnecting: 'reconnecting…', off: 'not live' }[s] +
      (detail ? ': ' + detail : '');
  }

  // --- history

  function messageNode(m) {
    const t = state.thread;
    const mine = t.kind === 'acsp' && m.sender_aid === t.aid;
    const agent = t.kind === 'turn' && m.msg_type === 'response';
    return el('li', { class: 'msg' + (mine ? ' mine' : '') + (agent ? ' agent' : ''), dataset: { seq: String(m.seq), id: m.id } },
      el('div', { class: 'head' },
        el('span', { class: 'sender', text: m.sender_name || m.sender || '?' }),
        el('span', { text: '#' + m.seq }),
        m.msg_type && m.msg_type !== 'text' ? el('span', { class: 'badge', text: m.msg_type }) : null,
        el('time', { datetime: m.created_at, title: fmtTime(m.created_at), text: fmtTime(m.created_at) })),
      // dir=auto: a right-to-left message reads (and aligns) as one.
      el('div', { class: 'body', dir: 'auto', text: m.content }));
  }

  /** Adds messages not seen yet, in seq order; `where` is append or prepend. */
  function addMessages(list, where) {
    const t = state.thread;
    const fresh = list.filter((m) => !t.seen.has(m.seq));
    if (!fresh.length) return 0;
    for (const m of fresh) t.seen.add(m.seq);
    const ol = $('messages');
    if (where === 'prepend') {
      ol.prepend(...fresh.map(messageNode));
    } else {
      for (const m of fresh) {
        // Keep seq order even if a late page and a live event cross.
        const node = messageNode(m);
        let before = null;
        for (let c = ol.lastElementChild; c && Number(c.dataset.seq) > m.seq; c = c.previousElementSibling) before = c;
        ol.insertBefore(node, before);
      }
    }
    for (const m of fresh) {
      t.highest = Math.max(t.highest, m.seq);
      if (t.lowest === null || m.seq < t.lowest) t.lowest = m.seq;
    }
    return fresh.length;
  }

  function updateOlderButton() {
    const t = state.thread;
    const more = t.lowest !== null && t.lowest > 1;
    show($('load-older'), more);
  }

  async function loadOlder() {
    const t = state.thread;
    if (!t || t.loadingOlder || t.lowest === null || t.lowest <= 1) return;
    t.loadingOlder = true;
    const gen = t.gen;
    const hist = $('history');
    const fromBottom = hist.scrollHeight - hist.scrollTop;
    try {
      const after = Math.max(0, t.lowest - 1 - PAGE);
      const page = await getThread(t.id, { aid: t.aid, after, limit: t.lowest - 1 - after });
      if (t.stopped || t.gen !== gen) return;
      addMessages(page.messages, 'prepend');
      t.lowest = Math.min(t.lowest, after + 1);
      hist.scrollTop = hist.scrollHeight - fromBottom;
      updateOlderButton();
    } catch (e) {
      banner('Could not load older messages: ' + describe(e));
    } finally {
      t.loadingOlder = false;
    }
  }

  $('load-older').addEventListener('click', loadOlder);
  $('history').addEventListener('scroll', () => {
    if ($('history').scrollTop < 40) loadOlder();
  });

  function stickToBottom(fn) {
    const hist = $('history');
    const atBottom = hist.scrollHeight - hist.scrollTop - hist.clientHeight < 60;
    fn();
    if (atBottom) hist.scrollTop = hist.scrollHeight;
  }

  // Live messages count as read once the page has shown them: one read of
  // the newest message raises the mark. At most one such read every 5 s, so
  // a busy thread leaves most of the key's per-minute reads to the user.
  function scheduleMark() {
    const t = state.thread;
    if (t.kind !== 'acsp' || !t.aid || t.markTimer || t.highest <= t.marked) return;
    t.markTimer = setTimeout(async () => {
      t.markTimer = null;
      if (t.stopped || document.visibilityState !== 'visible') return;
      const upTo = t.highest;
      try {
        await getThread(t.id, { aid: t.aid, after: upTo - 1, limit: 1 });
        t.marked = Math.max(t.marked, upTo);
        renderReading();
      } catch (e) {
        // The mark is raised again by the next read; nothing is lost.
      }
    }, 5000);
  }

  document.addEventListener('visibilitychange', () => {
    if (state.thread && document.visibilityState === 'visible') scheduleMark();
  });

  // --- the socket: live messages, resumed with `after` so nothing is missed or doubled

  async function connectThread(t) {
    if (t.stopped || t.gone) return;
    const gen = t.gen;
    let grant;
    try {
      if (t.needsLoad) {
        if (!(await loadLatest(t)) || t.gen !== gen) return;
        t.needsLoad = false;
        if (t.kind === 'turn') refreshTurns(t);
      }
      // Re-open only (`create: false`): a thread deleted meanwhile, or one
      // a restored server never had, must not be made again, empty, under
      // its id.
      grant = await api('POST', '/v1/turn-taking/actions/open_thread', { thread_id: t.id, create: false });
    } catch (e) {
      if (t.stopped || !state.key || t.gen !== gen) return;
      if (e instanceof ApiError && e.status === 404) {
        threadGone(t);
        return;
      }
      retryThread(t, describe(e));
      return;
    }
    if (t.stopped || t.gen !== gen) return;
    t.sentAfter = t.highest;
    const ws = new WebSocket(grant.realtime.connect_url + '&after=' + t.highest);
    t.ws = ws;
    ws.onmessage = (ev) => {
      if (t.stopped || t.ws !== ws) return;
      let e;
      try {
        e = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      onThreadEvent(t, e);
    };
    ws.onclose = (ev) => {
      if (t.stopped || t.ws !== ws) return;
      t.ws = null;
      if (ev.code === 4001) {
        signOut('This login key was revoked.');
        return;
      }
      // The thread is gone: there is nothing to reconnect to.
      if (ev.code === 4004) {
        threadGone(t, 'This thread was deleted on the server. The messages below are what this page had shown; nothing more can be posted.');
        return;
      }
      retryThread(t, ev.code === 1001 ? 'the server is restarting' : null);
    };
  }

  /** The server no longer has the thread: say so, stop, and refuse posts. */
  function threadGone(t, text) {
    t.gone = true;
    clearTimeout(t.retryTimer);
    const ws = t.ws;
    t.ws = null;
    if (ws) ws.close(1000);
    setLive('off', 'this thread no longer exists');
    show($('typing'), false);
    notice(text || 'This thread no longer exists on the server: it was deleted, or the server was restored ' +
      'from a backup taken before it was made. The messages below are what this page had shown; nothing more can be posted.');
    renderStatus();
  }

  /** Drops everything shown and reads the thread again from the server,
   * then resumes the socket from there: what the page showed no longer
   * matches the server (it was restored from a backup). */
  function resync(t, text) {
    t.gen += 1;
    const ws = t.ws;
    t.ws = null;
    if (ws) ws.close(1000);
    clearTimeout(t.retryTimer);
    clearTimeout(t.markTimer);
    t.markTimer = null;
    t.seen = new Set();
    t.highest = 0;
    t.lowest = null;
    t.marked = 0;
    t.readyOnce = false;
    t.loadingOlder = false;
    $('messages').replaceChildren();
    show($('load-older'), false);
    if (t.kind === 'turn') {
      // Turns and reply parts went back with the messages.
      t.parts = new Map();
      t.turns = new Map();
      t.epoch = null;
      $('respond-epoch').value = '';
      $('timeline').replaceChildren();
      $('batches').replaceChildren();
      show($('typing'), false);
    }
    notice(text);
    setLive('connecting', 'reading the thread again');
    t.needsLoad = true;
    t.retry = 500;
    connectThread(t);
  }

  /** After a reconnect whose `last_seq` reached the seq the page resumed
   * from: is that message still the one the page shows? A restored server
   * gives the lost seqs out again, to new messages, so the seq alone cannot
   * tell. (`connection.ready`'s generation changes with a restore, but says
   * only that the data went back, not whether what this page shows went
   * with it: a restored copy holds the thread as it was up to the backup,
   * so the message at this seq being the same one means nothing shown is
   * lost, and no notice is due. It also catches data put back without a
   * new generation.) The same read brings the thread's status (a change
   * while the socket was down is not replayed). */
  async function checkSeam(t, seq) {
    const gen = t.gen;
    let page;
    try {
      page = await getThread(t.id, { aid: t.aid, after: seq - 1, limit: 1 });
    } catch (e) {
      return; // the next reconnect checks again
    }
    if (t.stopped || t.gone || t.gen !== gen) return;
    state.seamChecks += 1;
    t.view = page.thread;
    renderStatus();
    const m = page.messages[0];
    const li = document.querySelector('#messages li.msg[data-seq="' + seq + '"]');
    if (!m || !li || li.dataset.id !== m.id) {
      resync(t, 'Message #' + seq + ' on the server is not the one this page showed: the server was restored from a ' +
        'backup and newer messages took the lost ones\' numbers. What this page showed was read again from the server.');
    }
  }

  function retryThread(t, why) {
    setLive('reconnecting', why);
    clearTimeout(t.retryTimer);
    t.retryTimer = setTimeout(() => connectThread(t), t.retry);
    t.retry = Math.min(t.retry * 2, 15000);
  }

  function onThreadEvent(t, e) {
    switch (e.type) {
      case 'connection.ready': {
        const last = e.data && e.data.last_seq;
        if (typeof last === 'number' && last < t.sentAfter) {
          // The thread went back (a restore): the messages above `last`
          // are gone, and those at or below it may be other messages.
          resync(t, 'The server has this thread up to #' + last + ', but this page had shown up to #' + t.sentAfter +
            ': the server was restored from a backup, and messages #' + (last + 1) + '–#' + t.sentAfter +
            ' are gone from it. What this page showed was read again from the server.');
          break;
        }
        const resumed = t.readyOnce;
        t.readyOnce = true;
        t.retry = 500;
        setLive('live');
        if (resumed && t.sentAfter > 0) checkSeam(t, t.sentAfter);
        // Turns may have changed while the socket was down.
        if (t.kind === 'turn' && t.ws) refreshTurns(t);
        break;
      }
      case 'thread.message': {
        let fresh = 0;
        stickToBottom(() => { fresh = addMessages([e.data], 'append'); });
        if (t.kind === 'turn' && fresh) {
          if (e.data.msg_type === 'response') {
            // A reply part replayed after a reconnect (live, parts come as
            // turn_taking.message): it was delivered.
            const part = Array.from(t.parts.values()).find((p) => p.state === 'scheduled' && p.content === e.data.content);
            if (part) part.state = 'delivered';
            renderTimeline();
          } else {
            // An inbound message starts a new turn: read its decision.
            newTurnObserved(t, null);
            refreshTurns(t);
          }
        }
        scheduleMark();
        break;
      }
      case 'thread.status':
        t.view.status = e.data.status;
        renderStatus();
        break;
      case 'turn_taking.typing':
        show($('typing'), e.data.state === 'start');
        if (typeof e.data.turn_epoch === 'number') noteEpoch(t, e.data.turn_epoch);
        // A reply this page has not seen scheduled (another client's): read its parts.
        if (e.data.state === 'start' && !hasScheduledParts(t)) refreshTurns(t);
        break;
      case 'turn_taking.message': {
        const d = e.data;
        noteEpoch(t, d.turn_epoch);
        const part = t.parts.get(d.id) || { id: d.id, epoch: d.turn_epoch, index: d.index, count: d.count };
        Object.assign(part, { content: d.content, deliverAt: d.deliver_at, deliveredAt: new Date().toISOString(), state: 'delivered', seq: d.seq });
        t.parts.set(d.id, part);
        if (d.index + 1 >= d.count) show($('typing'), false);
        if (!t.turns.has(d.turn_epoch)) refreshTurns(t);
        // The event's id is the stored message's (a resume replays it so);
        // `d.id` is the reply part's.
        stickToBottom(() => addMessages([{
          id: e.id || d.id, seq: d.seq, sender: 'agent', sender_name: 'agent', content: d.content,
          msg_type: 'response', created_at: d.deliver_at,
        }], 'append'));
        renderTimeline();
        renderBatches();
        break;
      }
      case 'turn_taking.reply_failed': {
        // Given up after its failed deliveries: the reply goes on without it.
        const d = e.data;
        const part = t.parts.get(d.id) || { id: d.id, epoch: d.turn_epoch, index: d.index, count: d.count };
        part.state = 'failed';
        t.parts.set(d.id, part);
        if (!t.turns.has(d.turn_epoch)) refreshTurns(t);
        renderTimeline();
        break;
      }
      case 'turn_taking.signal':
        $('signals').prepend(el('li', { class: 'batch' },
          el('div', { class: 'head' }, el('span', { text: new Date().toLocaleTimeString() })),
          el('div', { text: e.data.signal + (e.data.sender ? ' from ' + e.data.sender : '') })));
        break;
      default:
        break;
    }
  }

  // --- turn-taking: epochs, parts on a timeline, batches and decisions

  function noteEpoch(t, epoch) {
    if (typeof epoch !== 'number') return;
    if (t.epoch === null || epoch > t.epoch) {
      t.epoch = epoch;
      $('respond-epoch').value = String(epoch);
    }
  }

  /** A new inbound turn cancels the parts of older turns not yet delivered. */
  function newTurnObserved(t, epoch) {
    for (const p of t.parts.values()) {
      if (p.state === 'scheduled' && (epoch === null || p.epoch < epoch)) p.state = 'cancelled';
    }
    if (epoch !== null) noteEpoch(t, epoch);
    renderTimeline();
    renderBatches();
  }

  /** The part's list item, made once and updated in place (focus, selection
   * and element references survive the once-a-second refresh). */
  function partNode(p) {
    if (!p.node) {
      const refs = {
        state: el('span', { class: 'part-state' }),
        time: el('time', { class: 'deliver-at' }),
        content: el('div', { class: 'part-content' }),
        fill: el('span'),
      };
      p.refs = refs;
      p.node = el('li', { class: 'part', dataset: { index: String(p.index), epoch: String(p.epoch) } },
        el('div', { class: 'head' },
          el('span', { text: 'turn ' + p.epoch }),
          el('span', { text: 'part ' + (p.index + 1) + '/' + p.count }),
          refs.state, refs.time),
        refs.content,
        el('div', { class: 'bar', 'aria-hidden': 'true' }, refs.fill));
    }
    return p.node;
  }

  function renderTimeline() {
    const t = state.thread;
    if (!t || t.kind !== 'turn') return;
    const parts = Array.from(t.parts.values()).sort((a, b) =>
      a.epoch - b.epoch || (a.deliverAt || '').localeCompare(b.deliverAt || '') || a.index - b.index);
    const now = Date.now();
    const times = parts.map((p) => new Date(p.deliverAt).getTime()).filter(Number.isFinite);
    const start = Math.min(...times, now);
    const span = Math.max(...times, now) - start || 1;
    const ol = $('timeline');
    parts.forEach((p, i) => {
      const node = partNode(p);
      const at = new Date(p.deliverAt).getTime();
      const rel = Number.isFinite(at) ? (at - now) / 1000 : NaN;
      const when = !Number.isFinite(rel) ? '' : rel > 0 ? 'in ' + rel.toFixed(1) + ' s' : (-rel).toFixed(1) + ' s ago';
      if (node.dataset.state !== p.state) node.dataset.state = p.state;
      p.refs.state.textContent = p.state;
      p.refs.time.setAttribute('datetime', p.deliverAt || '');
      p.refs.time.title = 'deliver_at ' + p.deliverAt;
      p.refs.time.textContent = 'deliver_at ' + fmtClock(p.deliverAt) + (when ? ' (' + when + ')' : '');
      if (p.refs.content.textContent !== p.content) p.refs.content.textContent = p.content;
      // Widths through the CSSOM: the CSP allows no inline style attribute.
      p.refs.fill.style.left = '0';
      p.refs.fill.style.width = Number.isFinite(at) ? Math.max(2, ((at - start) / span) * 100) + '%' : '0';
      if (ol.children[i] !== node) ol.insertBefore(node, ol.children[i] || null);
    });
  }

  function hasScheduledParts(t) {
    return Array.from(t.parts.values()).some((p) => p.state === 'scheduled');
  }

  // The turns route is a read under the key's quota: at most one request
  // a second, the latest wish served after the one in flight.
  function refreshTurns(t) {
    if (t.stopped || t.kind !== 'turn' || t.turnsTimer) return;
    const wait = Math.max(0, t.turnsAt + 1000 - Date.now());
    t.turnsTimer = setTimeout(async () => {
      t.turnsAt = Date.now();
      try {
        await loadTurns(t);
      } catch (e) {
        if (!t.stopped && state.key) banner('Could not read the turns: ' + describe(e));
      } finally {
        t.turnsTimer = null;
      }
    }, wait);
  }

  const PART_STATES = { scheduled: 'scheduled', delivered: 'delivered', cancelled: 'cancelled', failed: 'failed' };

  /** Reads the recent turns (any client's) with their decisions and parts. */
  async function loadTurns(t) {
    const res = await api('GET', '/v1/turn-taking/threads/' + encodeURIComponent(t.id) + '/turns?limit=20');
    if (t.stopped) return;
    for (const turn of res.turns) {
      const known = t.turns.get(turn.turn_epoch);
      t.turns.set(turn.turn_epoch, Object.assign(turn, { text: known ? known.text : null }));
      noteEpoch(t, turn.turn_epoch);
      for (const p of turn.parts) {
        const part = t.parts.get(p.id) || { id: p.id, epoch: turn.turn_epoch, index: p.index, count: p.count };
        const status = PART_STATES[p.status] || 'scheduled';
        // A read that started before a live event must not turn a part
        // back to scheduled; a final state from the server is the truth.
        if (!part.state || part.state === 'scheduled' || status !== 'scheduled') part.state = status;
        Object.assign(part, { content: p.content, deliverAt: p.deliver_at, seq: p.seq });
        t.parts.set(p.id, part);
      }
    }
    renderBatches();
    renderTimeline();
  }

  /** What the batch said: its messages from the history shown, if loaded. */
  function batchText(turn) {
    if (turn.first_seq === null || turn.first_seq === undefined) return turn.text || '';
    const lines = [];
    for (let seq = turn.first_seq; seq <= turn.last_seq && lines.length < 5; seq++) {
      const li = document.querySelector('#messages li.msg[data-seq="' + seq + '"]');
      if (!li) continue;
      lines.push(li.querySelector('.sender').textContent + ': ' + li.querySelector('.body').textContent);
    }
    const n = turn.last_seq - turn.first_seq + 1;
    if (lines.length < n) lines.push((lines.length ? '… ' : '') + n + ' message' + (n === 1 ? '' : 's') + ' (#' + turn.first_seq + (n > 1 ? '–#' + turn.last_seq : '') + ')');
    return lines.join('\n');
  }

  function renderBatches() {
    const t = state.thread;
    if (!t || t.kind !== 'turn') return;
    const turns = Array.from(t.turns.values()).sort((a, b) => b.turn_epoch - a.turn_epoch);
    $('batches').replaceChildren(...turns.map((turn) => {
      const decision = turn.decision || 'no batch recorded';
      const parts = turn.parts || [];
      const counts = {};
      for (const p of parts) {
        const live = t.parts.get(p.id);
        const st = live ? live.state : p.status;
        counts[st] = (counts[st] || 0) + 1;
      }
      const reply = parts.length
        ? 'reply: ' + parts.length + ' part' + (parts.length === 1 ? '' : 's') + ' (' +
          Object.entries(counts).map(([k, v]) => v + ' ' + k).join(', ') + ')'
        : 'no reply';
      return el('li', { class: 'batch', dataset: { decision: turn.decision || 'none', epoch: String(turn.turn_epoch), tags: (turn.tags || []).join(' ') } },
        el('div', { class: 'head' },
          el('span', { text: 'turn ' + turn.turn_epoch }),
          turn.created_at ? el('time', { datetime: turn.created_at, title: fmtTime(turn.created_at), text: fmtClock(turn.created_at) }) : null),
        el('div', {}, el('strong', { class: 'decision', text: decision }),
          ' · ', (turn.tags && turn.tags.length)
            ? el('span', { class: 'tags' }, ...turn.tags.map((tag) => el('span', { class: 'badge tag', text: tag })))
            : el('span', { class: 'muted', text: 'no tags' })),
        el('div', { class: 'muted small batch-text', text: batchText(turn) }),
        el('div', { class: 'muted small', text: reply }));
    }));
  }

  $('turns-refresh').addEventListener('click', () => {
    if (state.thread) refreshTurns(state.thread);
  });

  function fmtClock(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso || '';
    return d.toLocaleTimeString(undefined, { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
  }

  // --- posting

  $('composer').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = state.thread;
    if (!t) return;
    const content = $('post-content').value;
    const err = $('post-error');
    if (!content.trim()) {
      setError(err, 'Write something first.');
      $('post-content').focus();
      return;
    }
    setError(err, '');
    $('post-send').disabled = true;
    try {
      if (t.kind === 'acsp') {
        const res = await api('POST', '/api/acsp/thread/message',
          { aid: $('post-as').value, thread_id: t.id, content, msg_type: $('post-type').value });
        stickToBottom(() => addMessages([res.message], 'append'));
      } else {
        const sender = $('post-sender').value.trim() || 'you';
        const res = await api('POST', '/v1/turn-taking/actions/submit_messages',
          { thread_id: t.id, messages: [{ sender, content }] });
        newTurnObserved(t, res.turn_epoch);
        // Shown at once from the answer; the turns route fills in the rest.
        if (!t.turns.has(res.turn_epoch)) {
          t.turns.set(res.turn_epoch, {
            turn_epoch: res.turn_epoch, decision: res.decision, tags: res.tags || [],
            first_seq: null, last_seq: null, created_at: new Date().toISOString(), parts: [],
            text: sender + ': ' + content,
          });
          renderBatches();
        }
        refreshTurns(t);
      }
      $('post-content').value = '';
    } catch (e) {
      setError(err, 'Not sent: ' + describe(e));
    } finally {
      $('post-send').disabled = !canPost(t);
    }
  });

  $('respond-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = state.thread;
    if (!t) return;
    const err = $('respond-error');
    const content = $('respond-content').value;
    const epoch = Number.parseInt($('respond-epoch').value, 10);
    if (!content.trim() || !Number.isInteger(epoch)) {
      setError(err, 'A reply needs content and the turn epoch (submit an inbound message first).');
      return;
    }
    setError(err, '');
    try {
      const res = await api('POST', '/v1/turn-taking/actions/respond', { thread_id: t.id, turn_epoch: epoch, content });
      if (res.superseded) {
        setError(err, 'Superseded: a newer turn has started, so nothing was scheduled.');
        return;
      }
      for (const p of res.scheduled) {
        if (!t.parts.has(p.id)) {
          t.parts.set(p.id, { id: p.id, epoch, index: p.index, count: res.scheduled.length, content: p.content, deliverAt: p.deliver_at, state: 'scheduled' });
        }
      }
      $('respond-content').value = '';
      renderTimeline();
    } catch (e) {
      setError(err, 'Not sent: ' + describe(e));
    }
  });

  $('thread-actions').addEventListener('click', async (ev) => {
    const b = ev.target.closest('button[data-status]');
    const t = state.thread;
    if (!b || !t) return;
    b.disabled = true;
    try {
      const res = await api('POST', '/api/acsp/thread/status', { aid: statusActor(), thread_id: t.id, status: b.dataset.status });
      t.view.status = res.status;
      renderStatus();
    } catch (e) {
      banner('Status not changed: ' + describe(e));
      renderStatus();
    }
  });

  $('copy-thread-id').addEventListener('click', (ev) => copy(state.thread ? state.thread.id : '', ev.currentTarget));

  // ---------------------------------------------------------------- turn-taking threads

  function recentTurn() {
    try {
      return JSON.parse(sessionStorage.getItem(RECENT_SLOT) || '[]');
    } catch (e) {
      return [];
    }
  }

  function rememberTurnThread(id) {
    const list = [id, ...recentTurn().filter((x) => x !== id)].slice(0, 20);
    sessionStorage.setItem(RECENT_SLOT, JSON.stringify(list));
  }

  function renderRecentTurn() {
    const list = recentTurn();
    $('recent-turn').replaceChildren(...(list.length
      ? list.map((id) => el('li', {}, el('a', { href: '#/thread/' + encodeURIComponent(id) }, el('code', { text: id }))))
      : [el('li', { class: 'muted', text: 'None yet.' })]));
  }

  $('open-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = $('open-id').value.trim();
    if (!id) {
      setError($('open-error'), 'Enter a thread id.');
      return;
    }
    setError($('open-error'), '');
    location.hash = '#/thread/' + encodeURIComponent(id);
  });

  $('new-turn').addEventListener('click', async () => {
    const body = $('new-signals').checked ? { integrations: { social_signals: {} } } : {};
    try {
      const res = await api('POST', '/v1/turn-taking/actions/open_thread', body);
      rememberTurnThread(res.thread.id);
      location.hash = '#/thread/' + encodeURIComponent(res.thread.id);
    } catch (e) {
      setError($('open-error'), describe(e));
    }
  });

  // ---------------------------------------------------------------- webhooks

  const ATTEMPTS_SHOWN = 5;

  /** Reads the endpoints and each one's latest attempts. */
  async function loadWebhooks() {
    const list = await api('GET', '/api/acsp/webhooks');
    return Promise.all(list.webhooks.map(async (w) => {
      const res = await api('GET', '/api/acsp/webhooks/' + encodeURIComponent(w.id) + '/attempts?limit=' + ATTEMPTS_SHOWN);
      return { webhook: res.webhook, attempts: res.attempts };
    }));
  }

  async function refreshWebhooks() {
    let rows;
    try {
      rows = await loadWebhooks();
    } catch (e) {
      if (state.key) banner('Could not read the webhooks: ' + describe(e));
      return;
    }
    if ($('view-webhooks').hidden) return;
    banner('');
    $('webhooks-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    // Rebuilt only when something changed, so focus and selection survive
    // the 5-second refresh.
    const json = JSON.stringify(rows);
    if (json === state.webhooks.shown) return;
    state.webhooks.shown = json;
    show($('webhooks-empty'), rows.length === 0);
    $('webhooks-list').replaceChildren(...rows.map(webhookNode));
  }

  function webhookNode({ webhook: w, attempts }) {
    const active = w.status === 'active';
    const toggle = el('button', { type: 'button', class: 'small-btn', dataset: { action: active ? 'pause' : 'resume', id: w.id } },
      active ? 'Pause' : 'Resume');
    const rows = attempts.map((a) => el('tr', { class: 'attempt', dataset: { ok: String(!a.error), status: a.status === null ? 'none' : String(a.status) } },
      el('td', { 'data-label': 'When' }, el('time', { datetime: a.created_at, title: fmtTime(a.created_at), text: fmtClock(a.created_at) })),
      el('td', { 'data-label': 'Event' }, el('code', { text: shortAid(a.event_id) }), ' #' + a.position),
      el('td', { 'data-label': 'Try', class: 'num', text: String(a.attempt) }),
      el('td', { 'data-label': 'Status', class: 'num attempt-status', text: a.status === null ? 'no answer' : String(a.status) }),
      el('td', { 'data-label': 'Latency', class: 'num attempt-latency', text: a.latency_ms + ' ms' }),
      el('td', { 'data-label': 'Error', class: 'attempt-error', text: a.error || '—' })));
    return el('article', { class: 'card webhook', dataset: { id: w.id, status: w.status } },
      el('div', { class: 'head row' },
        el('code', { class: 'webhook-url', text: w.url }),
        el('span', { class: 'badge webhook-status', dataset: { status: w.status }, text: w.status }),
        toggle),
      w.disabled_reason ? el('p', { class: 'error small', text: 'Disabled: ' + w.disabled_reason }) : null,
      el('p', { class: 'small' },
        w.description ? el('span', { class: 'webhook-description', text: w.description + ' · ' }) : null,
        'events: ', el('span', { class: 'webhook-events', text: w.events.join(', ') }),
        ' · id ', el('code', { text: w.id }),
        w.failures ? ' · ' + w.failures + ' failed tr' + (w.failures === 1 ? 'y' : 'ies') : null,
        w.next_attempt_at ? ' · next try ' + fmtTime(w.next_attempt_at) : null,
        w.previous_secret_expires_at ? ' · the previous secret signs too until ' + fmtTime(w.previous_secret_expires_at) : null),
      attempts.length
        ? el('table', { class: 'list attempts' },
          el('caption', { class: 'sr-only', text: 'Latest delivery attempts to ' + w.url }),
          el('thead', {}, el('tr', {}, ...['When', 'Event', 'Try', 'Status', 'Latency', 'Error'].map((h) => el('th', { scope: 'col', text: h })))),
          el('tbody', {}, ...rows))
        : el('p', { class: 'muted small', text: 'No delivery attempts yet.' }));
  }

  $('webhooks-list').addEventListener('click', async (ev) => {
    const b = ev.target.closest('button[data-action]');
    if (!b) return;
    b.disabled = true;
    try {
      await api('POST', '/api/acsp/webhooks/' + encodeURIComponent(b.dataset.id) + '/' + b.dataset.action);
    } catch (e) {
      banner('Not changed: ' + describe(e));
    }
    await refreshWebhooks();
  });

  $('webhook-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = $('webhook-error');
    const url = $('webhook-url').value.trim();
    const events = Array.from(document.querySelectorAll('input[name="webhook-event"]:checked')).map((c) => c.value);
    if (!url || !events.length) {
      setError(err, 'An endpoint needs a URL and at least one event.');
      return;
    }
    setError(err, '');
    const body = { url, events };
    const description = $('webhook-description').value.trim();
    if (description) body.description = description;
    try {
      const res = await api('POST', '/api/acsp/webhooks', body);
      // The secret is shown once, here, as the API shows it once.
      const secret = $('webhook-secret');
      secret.replaceChildren('Signing secret (shown once, copy it now): ', el('code', { text: res.secret }));
      show(secret, true);
      $('webhook-url').value = '';
      $('webhook-description').value = '';
      await refreshWebhooks();
    } catch (e) {
      setError(err, 'Not added: ' + describe(e));
    }
  });

  function startWebhooksTimer() {
    stopWebhooksTimer();
    state.webhooks.shown = null;
    show($('webhook-secret'), false);
    refreshWebhooks();
    state.webhooks.timer = setInterval(refreshWebhooks, 5000);
  }

  function stopWebhooksTimer() {
    clearInterval(state.webhooks.timer);
    state.webhooks.timer = null;
  }

  $('webhooks-refresh').addEventListener('click', refreshWebhooks);

  // ---------------------------------------------------------------- server

  async function refreshServer() {
    try {
      const res = await fetch('/healthz', { cache: 'no-store', credentials: 'omit' });
      const h = await res.json();
      $('srv-status').textContent = res.ok ? h.status : 'unavailable (' + res.status + ')';
      $('srv-version').textContent = h.version || '—';
      $('srv-uptime').textContent = typeof h.uptime_secs === 'number' ? duration(h.uptime_secs) : '—';
      $('srv-durability').textContent = h.durability || '—';
      const rt = h.realtime || {};
      $('srv-sockets').textContent = rt.sockets !== undefined ? String(rt.sockets) : '—';
      $('srv-actors').textContent = rt.live_actors !== undefined ? String(rt.live_actors) : '—';
    } catch (e) {
      $('srv-status').textContent = 'the server did not answer';
    }
  }

  function startServerTimer() {
    stopServerTimer();
    refreshServer();
    state.serverTimer = setInterval(refreshServer, 5000);
  }

  function stopServerTimer() {
    clearInterval(state.serverTimer);
    state.serverTimer = null;
  }

  $('server-refresh').addEventListener('click', refreshServer);

  // For the browser tests: drop the open sockets as a network failure would,
  // to show that the page resumes with `after`. A page's own script could do
  // this anyway; it reaches nothing the key does not.
  window.threadlineInspector = {
    seamChecks() {
      return state.seamChecks;
    },
    dropSockets() {
      if (state.thread && state.thread.ws) state.thread.ws.close(4000, 'dropped');
      if (state.inbox && state.inbox.ws) state.inbox.ws.close(4000, 'dropped');
    },
  };

  // ---------------------------------------------------------------- start

  async function start() {
    const saved = sessionStorage.getItem(KEY_SLOT);
    if (saved) {
      try {
        await signIn(saved);
      } catch (e) {
        sessionStorage.removeItem(KEY_SLOT);
        state.key = null;
        setError($('signin-error'), e instanceof ApiError && e.status === 401
          ? 'The saved login key is no longer accepted. Sign in again.'
          : 'Could not sign in: ' + describe(e));
      }
    }
    route();
  }

  start();
})();

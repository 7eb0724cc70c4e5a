// The home page: uploads (several files, dropped or chosen, each with its
// own progress bar and cancel button; resumable, with the tus protocol), search, "more", and a list of videos
// kept up to date from the JSON API. The page is never reloaded: whatever
// the form holds (files, a typed title, a message) stays as it is.
'use strict';

(() => {
  const form = document.getElementById('upload');
  const fileInput = document.getElementById('upload-file');
  const idInput = document.getElementById('upload-id');
  const titleInput = document.getElementById('upload-title');
  const descInput = document.getElementById('upload-description');
  const drop = document.getElementById('drop');
  const msg = document.getElementById('msg');
  const uploadList = document.getElementById('uploads');
  const searchForm = document.getElementById('search');
  const searchInput = document.getElementById('search-q');
  const grid = document.getElementById('videos');
  const empty = document.getElementById('empty');
  const more = document.getElementById('more');
  const pageSize = parseInt(grid.dataset.pageSize, 10) || 24;
  const maxBytes = parseInt(form.dataset.maxBytes, 10) || Infinity;

  // ---- messages ----------------------------------------------------------

  function say(text, isError) {
    msg.textContent = text;
    msg.className = isError ? 'err' : '';
  }

  /// The message of a refusal: the `error` of a JSON answer, else its status.
  function refusal(xhr) {
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.error) return body.error;
    } catch (_) { /* not JSON */ }
    return xhr.statusText || 'no answer';
  }

  // ---- the list of videos ------------------------------------------------

  let query = searchInput.value.trim();
  let nextCursor = null;
  let shown = grid.children.length;
  if (more.getAttribute('href')) {
    nextCursor = new URL(more.href).searchParams.get('cursor');
  }

  function duration(secs) {
    const s = Math.round(secs);
    return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
  }

  function stateText(v) {
    switch (v.state) {
      case 'ready': return duration(v.duration_secs);
      case 'uploaded': return 'uploaded, waiting';
      case 'processing': return 'processing ' + Math.round(v.progress) + '%';
      case 'failed': return 'failed: ' + (v.failure || '');
      default: return v.state;
    }
  }

  /// A tile like the server's (templates/tile.html), from a video's JSON.
  function tile(v) {
    const li = document.createElement('li');
    li.dataset.id = v.id;
    const a = document.createElement('a');
    a.href = '/videos/' + encodeURIComponent(v.id);
    li.appendChild(a);
    fillTile(li, v);
    return li;
  }

  function fillTile(li, v) {
    const a = li.firstElementChild;
    const key = [v.state, Math.round(v.progress), v.title, v.description, v.failure].join('\u0000');
    if (li.dataset.key === key) return;
    li.dataset.key = key;
    a.replaceChildren();
    let thumb;
    if (v.state === 'ready') {
      thumb = document.createElement('img');
      thumb.src = v.poster; thumb.alt = ''; thumb.loading = 'lazy';
    } else {
      thumb = document.createElement('div');
      thumb.className = 'ph';
    }
    const meta = document.createElement('div');
    meta.className = 'meta';
    const t = document.createElement('div');
    t.className = 't'; t.title = v.title; t.textContent = v.title;
    meta.appendChild(t);
    if (v.description) {
      const d = document.createElement('div');
      d.className = 'd'; d.textContent = v.description;
      meta.appendChild(d);
    }
    const s = document.createElement('span');
    s.className = v.state === 'failed' ? 'state failed' : 'state';
    s.textContent = stateText(v);
    meta.appendChild(s);
    a.append(thumb, meta);
  }

  /// Makes the list show `videos` (newest first), reusing tiles by id so
  /// that nothing moves or flickers that did not change.
  function showVideos(videos) {
    const old = new Map();
    for (const li of Array.from(grid.children)) old.set(li.dataset.id, li);
    const next = videos.map((v) => {
      const li = old.get(v.id) || tile(v);
      fillTile(li, v);
      return li;
    });
    next.forEach((li, i) => {
      if (grid.children[i] !== li) grid.insertBefore(li, grid.children[i] || null);
    });
    while (grid.children.length > next.length) grid.lastElementChild.remove();
    shown = next.length;
    empty.textContent = query ? 'No video matches these words.' : 'No videos yet. Upload one!';
    empty.hidden = next.length > 0;
  }

  function setMore(cursor) {
    nextCursor = cursor;
    more.hidden = !cursor;
    if (cursor) {
      const u = new URL('/', location.href);
      if (query) u.searchParams.set('q', query);
      u.searchParams.set('cursor', cursor);
      more.href = u.pathname + u.search;
    } else {
      more.removeAttribute('href');
    }
  }

  async function fetchPage(cursor, limit) {
    const u = new URL('/api/videos', location.href);
    if (query) u.searchParams.set('q', query);
    if (cursor) u.searchParams.set('cursor', cursor);
    u.searchParams.set('limit', String(limit));
    const r = await fetch(u, { headers: { Accept: 'application/json' } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }

  /// Reloads the videos shown (at least a page) in place.
  let refreshing = false;
  async function refresh() {
    if (refreshing) return;
    refreshing = true;
    try {
      const page = await fetchPage(null, Math.min(1000, Math.max(pageSize, shown)));
      showVideos(page.items);
      setMore(page.next_cursor);
    } catch (e) {
      // A failed poll is tried again at the next one.
    } finally {
      refreshing = false;
    }
  }

  more.addEventListener('click', async (ev) => {
    if (!nextCursor) return;
    ev.preventDefault();
    try {
      const page = await fetchPage(nextCursor, pageSize);
      const have = new Set(Array.from(grid.children, (li) => li.dataset.id));
      for (const v of page.items) if (!have.has(v.id)) grid.appendChild(tile(v));
      shown = grid.children.length;
      setMore(page.next_cursor);
    } catch (e) {
      say('Could not load more videos: ' + e.message, true);
    }
  });

  searchForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    query = searchInput.value.trim();
    shown = 0;
    const u = new URL('/', location.href);
    if (query) u.searchParams.set('q', query);
    history.replaceState(null, '', u.pathname + u.search);
    await refresh();
  });

  // Poll while the page is visible: fast while something is on its way.
  function busy() {
    return uploadList.querySelector('li[data-busy]') !== null ||
      Array.from(grid.querySelectorAll('.state')).some((s) => /processing|waiting|deleting/.test(s.textContent));
  }
  let lastPoll = 0;
  setInterval(() => {
    if (document.hidden) return;
    const now = Date.now();
    if (busy() || now - lastPoll > 10000) {
      lastPoll = now;
      refresh();
    }
  }, 1500);

  // ---- uploads -----------------------------------------------------------

  // tus-js-client (built into the server, /static/tus.min.js), loaded now so
  // that it is there by the first upload; without it (or in a browser it
  // does not support) uploads use the classic form.
  const tusReady = new Promise((resolve) => {
    const usable = () => (window.tus && window.tus.isSupported ? window.tus : null);
    if (window.tus) { resolve(usable()); return; }
    const script = document.createElement('script');
    script.src = '/static/tus.min.js';
    script.onload = () => resolve(usable());
    script.onerror = () => resolve(null);
    document.head.appendChild(script);
  });

  /// One file's upload: a row with its name, a progress bar, its status and
  /// a cancel button.
  function startUpload(file, fields) {
    const li = document.createElement('li');
    li.dataset.busy = '1';
    const name = document.createElement('span');
    name.className = 'name'; name.textContent = file.name;
    const bar = document.createElement('progress');
    bar.max = 100; bar.value = 0;
    bar.setAttribute('aria-label', 'Upload progress of ' + file.name);
    const status = document.createElement('span');
    status.className = 'status'; status.textContent = 'Uploading…';
    const cancel = document.createElement('button');
    cancel.type = 'button'; cancel.textContent = 'Cancel';
    cancel.setAttribute('aria-label', 'Cancel the upload of ' + file.name);
    li.append(name, cancel, bar, status);
    uploadList.appendChild(li);

    const done = (text, isError) => {
      delete li.dataset.busy;
      status.textContent = text;
      status.className = isError ? 'status err' : 'status';
      bar.hidden = true;
      cancel.remove();
    };
    if (file.size > maxBytes) {
      done('Refused: larger than the ' + Math.floor(maxBytes / 1048576) + ' MiB limit.', true);
      return;
    }
    const row = { li, bar, status, cancel, done, shownPct: -1 };
    tusReady.then((tus) => (tus ? viaTus(tus, file, fields, row) : viaForm(file, fields, row)));
  }

  /// Shows `loaded` of `total` bytes sent on `row`'s bar; the live region
  /// hears of every tenth, not every byte.
  function progress(row, loaded, total) {
    row.bar.value = total ? 100 * loaded / total : 0;
    const pct = Math.floor(row.bar.value / 10) * 10;
    if (pct !== row.shownPct) { row.shownPct = pct; row.status.textContent = 'Uploading… ' + pct + '%'; }
    if (total && loaded >= total) row.status.textContent = 'Checking the file…';
  }

  /// An upload the server took as video `id`.
  function accepted(row, id) {
    row.done(id ? 'Uploaded as “' + id + '”; processing.' : 'Uploaded; processing.', false);
    row.li.dataset.id = id;
    refresh();
  }

  // Fingerprints of the uploads started from this page: a second file
  // identical to one already on its way (two copies chosen at once) is a
  // new upload, not a resumption of the first.
  const started = new Set();

  /// Uploads `file` with the tus protocol (`/files/`): a dropped connection
  /// is retried and resumes from the last byte the server holds, and a file
  /// whose upload was cut short on an earlier visit (same file, same
  /// fields) resumes where it stopped. Cancel terminates the upload on the
  /// server.
  async function viaTus(tus, file, fields, row) {
    const fingerprint = JSON.stringify(['tritontube', file.name, file.type, file.size,
      file.lastModified, fields.id, fields.title, fields.description]);
    const metadata = { filename: file.name, title: fields.title, description: fields.description };
    if (fields.id) metadata.id = fields.id;
    let cancelled = false;
    // A signed-in upload carries the session's CSRF token.
    const csrf = document.querySelector('meta[name="csrf-token"]');
    const upload = new tus.Upload(file, {
      endpoint: new URL('/files/', location.href).href,
      headers: csrf ? { 'X-CSRF-Token': csrf.content } : {},
      metadata,
      fingerprint: () => Promise.resolve(fingerprint),
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
      removeFingerprintOnSuccess: true,
      onProgress: (loaded, total) => progress(row, loaded, total),
      onSuccess: (payload) => {
        const res = payload && payload.lastResponse;
        accepted(row, (res && res.getHeader('Tt-Video-Id')) || '');
      },
      onError: (err) => {
        if (cancelled) return;
        const res = err && err.originalResponse;
        const code = res ? res.getStatus() : 0;
        if (code >= 400 && code < 500) {
          let text = res.getBody() || '';
          try { text = JSON.parse(text).error || text; } catch (_) { /* not JSON */ }
          row.done('Upload refused (' + code + '): ' + text, true);
        } else {
          row.done('Upload failed: ' + (code ? 'the server answered ' + code : 'the connection was lost') + '.', true);
        }
      },
    });
    row.cancel.addEventListener('click', () => {
      cancelled = true;
      // Terminates the upload: the server drops what it holds of it.
      upload.abort(true).catch(() => { /* gone already */ });
      row.done('Cancelled.', false);
    });
    if (!started.has(fingerprint)) {
      started.add(fingerprint);
      try {
        const previous = await upload.findPreviousUploads();
        if (previous.length > 0) upload.resumeFromPreviousUpload(previous[0]);
      } catch (_) { /* no storage: start afresh */ }
    }
    if (!cancelled) upload.start();
  }

  /// Uploads `file` with the classic form (`POST /upload`), for a browser
  /// tus-js-client does not support.
  function viaForm(file, fields, row) {
    const data = new FormData();
    // The fields first, then the file (the server takes any order).
    for (const [k, v] of Object.entries(fields)) data.append(k, v);
    data.append('file', file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/upload');
    xhr.setRequestHeader('Accept', 'application/json');
    // A signed-in upload carries the session's CSRF token.
    const csrf = document.querySelector('meta[name="csrf-token"]');
    if (csrf) xhr.setRequestHeader('X-CSRF-Token', csrf.content);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress(row, e.loaded, e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        let id = '';
        try { id = JSON.parse(xhr.responseText).id; } catch (_) { /* keep going */ }
        accepted(row, id);
      } else {
        row.done('Upload refused (' + xhr.status + '): ' + refusal(xhr), true);
      }
    };
    xhr.onerror = () => row.done('Upload failed: the connection was lost.', true);
    xhr.onabort = () => row.done('Cancelled.', false);
    row.cancel.addEventListener('click', () => xhr.abort());
    xhr.send(data);
  }

  function uploadAll(files) {
    files = Array.from(files);
    if (files.length === 0) { say('Choose or drop a video file first.', true); return; }
    const id = idInput.value.trim();
    if (id && files.length > 1) {
      say('An id names one video: clear it to upload several files at once.', true);
      idInput.focus();
      return;
    }
    if (!idInput.checkValidity()) {
      say('The id may hold only letters, digits, ".", "_" and "-", and may not start with ".".', true);
      idInput.focus();
      return;
    }
    say('', false);
    const fields = { id, title: titleInput.value.trim(), description: descInput.value.trim() };
    for (const f of files) startUpload(f, fields);
    form.reset();
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    uploadAll(fileInput.files);
  });

  // Files dropped anywhere on the upload card (or the drop zone) upload as
  // if chosen; dropped elsewhere, the browser must not open them instead.
  const card = form.closest('section') || drop;
  for (const t of ['dragenter', 'dragover']) {
    card.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  }
  for (const t of ['dragleave', 'dragend']) {
    card.addEventListener(t, () => drop.classList.remove('over'));
  }
  card.addEventListener('drop', (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    if (ev.dataTransfer && ev.dataTransfer.files.length) uploadAll(ev.dataTransfer.files);
  });
  window.addEventListener('dragover', (ev) => ev.preventDefault());
  window.addEventListener('drop', (ev) => ev.preventDefault());
})();

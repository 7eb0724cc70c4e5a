// The watch page: plays a ready video, and follows one still being
// processed (progress, then the player, or the reason it failed) from the
// JSON API without reloading the page.
//
// For its uploader and admins, the page also has forms to edit the title
// and description and to delete the video; with script they go through
// the JSON API (`PATCH`/`DELETE /api/videos/<id>`, the session's CSRF
// token in `X-CSRF-Token`), so the player keeps playing while the title
// changes. Without script they post as plain forms.
//
// Players are kept in `PLAYERS`, by the format they play; `start` picks the
// first one this browser can run, once playback.js has chosen DASH (a
// browser without Media Source Extensions plays the HLS playlist natively).
'use strict';

(() => {
  const section = document.getElementById('watch');
  const video = document.getElementById('player');
  const msg = document.getElementById('msg');
  const id = section.dataset.id;
  window.playerError = null;

  function fail(text) {
    window.playerError = text;
    msg.className = 'err';
    msg.textContent = 'Playback error: ' + text;
  }

  /// Sizes the player from its frame (see site.css: --w and --h).
  function size(w, h) {
    if (!(w > 0 && h > 0)) { w = 16; h = 9; }
    video.dataset.w = w; video.dataset.h = h;
    video.width = w; video.height = h;
    video.style.setProperty('--w', w);
    video.style.setProperty('--h', h);
  }

  /// Fills the quality menu with `reps` ({label, select()}) and an "Auto"
  /// entry that calls `auto(true)`.
  function qualityMenu(reps, auto) {
    const sel = document.getElementById('quality');
    reps.forEach((r, i) => {
      const o = document.createElement('option');
      o.value = String(i); o.textContent = r.label;
      sel.appendChild(o);
    });
    sel.onchange = () => {
      const isAuto = sel.value === 'auto';
      auto(isAuto);
      if (!isAuto) reps[parseInt(sel.value, 10)].select();
    };
  }

  const PLAYERS = {
    /// MPEG-DASH through dash.js.
    dash: {
      available: () => typeof dashjs === 'object',
      start(manifest) {
        const player = dashjs.MediaPlayer().create();
        player.initialize(video, manifest, true);
        player.on(dashjs.MediaPlayer.events.ERROR, (e) => fail(JSON.stringify(e.error || e)));
        player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => {
          const reps = player.getRepresentationsByType ? player.getRepresentationsByType('video') : [];
          qualityMenu(
            reps.map((r, i) => ({
              label: (r.width && r.height ? Math.min(r.width, r.height) : '?') + 'p',
              select: () => player.setRepresentationForTypeByIndex('video', i, true),
            })),
            (auto) => player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: auto } } } }),
          );
        });
        return player;
      },
    },
  };

  /// Plays `manifest` (DASH) where Media Source Extensions exist, else
  /// the HLS playlist `hls` natively (see playback.js), else says why not.
  function start(manifest, hls) {
    const how = window.TritonTubePlayback
      ? window.TritonTubePlayback.start(video, { hls: hls || null, onError: fail })
      : 'dash';
    if (how !== 'dash') return null;
    for (const p of Object.values(PLAYERS)) {
      if (p.available()) return p.start(manifest);
    }
    fail('this server has no player for this video');
    return null;
  }

  function show(which) {
    for (const part of ['processing', 'player-box', 'failed', 'deleting']) {
      document.getElementById(part).hidden = part !== which;
    }
  }

  /// A video that became ready while the page was open: its player.
  function becameReady(v) {
    const top = (v.renditions && v.renditions[0]) || v;
    size(top.width, top.height);
    video.poster = v.poster;
    document.getElementById('info').textContent =
      Math.floor(Math.round(v.duration_secs) / 60) + ':' + String(Math.round(v.duration_secs) % 60).padStart(2, '0') +
      ' · ' + v.width + '×' + v.height;
    show('player-box');
    start(v.manifest, v.hls_manifest);
  }

  async function follow() {
    let r;
    try {
      r = await fetch('/api/videos/' + encodeURIComponent(id), { headers: { Accept: 'application/json' } });
    } catch (_) {
      return setTimeout(follow, 2000);
    }
    if (r.status === 404) {
      show('deleting');
      document.getElementById('deleting').textContent = 'This video has been deleted.';
      return;
    }
    if (!r.ok) return setTimeout(follow, 2000);
    const v = await r.json();
    section.dataset.state = v.state;
    if (v.state === 'ready') return becameReady(v);
    if (v.state === 'failed') {
      document.getElementById('reason').textContent = v.failure || '';
      return show('failed');
    }
    if (v.state === 'deleting') return show('deleting');
    document.getElementById('pct').textContent = String(Math.floor(v.progress));
    document.getElementById('bar').value = v.progress;
    setTimeout(follow, 1000);
  }

  // ---- edit and delete (uploader and admins) ------------------------------

  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : '';
  const api = '/api/videos/' + encodeURIComponent(id);

  function say(text, isError) {
    msg.className = isError ? 'err' : '';
    msg.textContent = text;
  }

  async function refusal(r) {
    try { return (await r.json()).error || r.statusText; } catch (_) { return r.statusText; }
  }

  const editForm = document.getElementById('edit');
  if (editForm) {
    editForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const title = document.getElementById('edit-title').value.trim();
      const description = document.getElementById('edit-description').value.trim();
      let r;
      try {
        r = await fetch(api, {
          method: 'PATCH',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRF-Token': csrf },
          body: JSON.stringify({ title, description }),
        });
      } catch (_) {
        return say('Not saved: the connection was lost.', true);
      }
      if (!r.ok) return say('Not saved (' + r.status + '): ' + await refusal(r), true);
      const v = await r.json();
      const h1 = document.getElementById('title');
      h1.textContent = v.title; h1.title = v.title;
      document.title = v.title + ' · TritonTube';
      const desc = document.getElementById('description');
      desc.textContent = v.description || '';
      desc.hidden = !v.description;
      say('Saved.', false);
    });
  }

  const deleteForm = document.getElementById('delete');
  if (deleteForm) {
    deleteForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (!window.confirm('Delete this video for good?')) return;
      let r;
      try {
        r = await fetch(api, { method: 'DELETE', headers: { Accept: 'application/json', 'X-CSRF-Token': csrf } });
      } catch (_) {
        return say('Not deleted: the connection was lost.', true);
      }
      if (r.status === 204 || r.status === 202) {
        window.location.assign('/');
        return;
      }
      say('Not deleted (' + r.status + '): ' + await refusal(r), true);
    });
  }

  size(parseInt(video.dataset.w, 10), parseInt(video.dataset.h, 10));
  const state = section.dataset.state;
  if (state === 'ready') {
    start(video.dataset.manifest, video.dataset.hls);
  } else if (state === 'uploaded' || state === 'processing') {
    follow();
  }
})();

// How the watch page plays a video: MPEG-DASH through dash.js where the
// browser has Media Source Extensions, otherwise the browser's own HLS
// player (Safari on iOS has no MediaSource but plays HLS natively),
// otherwise nothing, saying why. Self-contained: it needs only what it is
// given, so any page can use it.
//
//   const how = TritonTubePlayback.start(video, {hls: '/content/<id>/master.m3u8', onError});
//   if (how === 'dash') { /* create the dash.js player */ }
(function (global) {
  'use strict';

  // What the transcode writes: H.264 Main and AAC-LC in fMP4.
  const CODECS = 'video/mp4; codecs="avc1.4d401e,mp4a.40.2"';
  const HLS_TYPE = 'application/vnd.apple.mpegurl';

  // 'dash' where Media Source Extensions can play the segments, 'hls'
  // where the browser plays HLS itself and the video has an HLS playlist,
  // null where neither. `env` is the window to look at (this one by
  // default).
  function choose(video, hlsUrl, env) {
    const ms = (env || global).MediaSource;
    if (ms && typeof ms.isTypeSupported === 'function' && ms.isTypeSupported(CODECS)) {
      return 'dash';
    }
    if (hlsUrl && video.canPlayType(HLS_TYPE) !== '') {
      return 'hls';
    }
    return null;
  }

  // Chooses as above, and for 'hls' starts the native player on `video`
  // (errors go to `onError`, with what failed). For 'dash' it only says so:
  // the page creates its dash.js player. Returns the choice, also kept in
  // `window.playbackChoice` for whoever wants to know.
  function start(video, options) {
    const hlsUrl = options.hls || null;
    const onError = options.onError || function () {};
    const how = choose(video, hlsUrl, options.env);
    global.playbackChoice = how;
    if (how === 'hls') {
      video.addEventListener('error', function () {
        const e = video.error;
        onError('HLS playback failed' + (e ? ' (code ' + e.code + (e.message ? ': ' + e.message : '') + ')' : ''));
      });
      video.src = hlsUrl;
      const playing = video.play();
      // A refused autoplay is not an error: the controls are there.
      if (playing && playing.catch) playing.catch(function () {});
    } else if (how === null) {
      onError(hlsUrl
        ? 'this browser can play neither MPEG-DASH (no Media Source Extensions) nor HLS'
        : 'this browser has no Media Source Extensions, and this video has no HLS playlist');
    }
    return how;
  }

  global.TritonTubePlayback = { choose: choose, start: start };
})(window);

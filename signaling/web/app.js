// voxrelay browser client: one voice call at a time, over the public API only (PROTOCOL.md §1–2),
// or one room (§4, bottom of this file).
//
// 1. A client secret: the server's same-origin helper (POST /web/session) mints one, or the
//    user pastes one (the helper may be off). The API key never reaches the page.
// 2. The call: RTCPeerConnection with the microphone track and an "oai-events" data channel,
//    offered to POST /v1/realtime/calls (GA event names; beta names are understood too).
// 3. Server events drive the page: the voice-activity/turn state, the conversation, the agent
//    speaking indicator, barge-in. getStats() drives the call stats.
// 4. Resilience: an unexpected drop starts a new call after an exponential backoff with jitter
//    (capped). voxrelay's realtime calls take no re-offer, so an ICE restart is not possible:
//    a network change starts a new call at once instead. Every call from one Connect is in one
//    `conversation` (a random token), so the agent of a new call continues where the last stopped.

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('call-form'), status: $('status'), error: $('error'), connect: $('connect'), disconnect: $('disconnect'),
  agent: $('agent'), mic: $('mic'), level: $('mic-level'), secret: $('secret'), secretBox: $('secret-box'),
  turn: $('turn-state'), speaking: $('agent-speaking'), conversation: $('conversation'), events: $('events'),
  remote: $('remote'), rtt: $('stat-rtt'), jitter: $('stat-jitter'), loss: $('stat-loss'), bitrate: $('stat-bitrate'),
  agentLevel: $('stat-level'), codec: $('stat-codec'),
  roomForm: $('room-form'), roomName: $('room-name'), roomUser: $('room-user'), roomToken: $('room-token'), roomTokenBox: $('room-token-box'),
  roomJoin: $('room-join'), roomMute: $('room-mute'), roomLeave: $('room-leave'), people: $('room-people'), chat: $('chat'),
  chatForm: $('chat-form'), chatText: $('chat-text'), chatSend: $('chat-send'), roomAudio: $('room-audio'),
};

const BACKOFF_BASE_MS = 1000;       // first retry after 0.5..1 s
const BACKOFF_CAP_MS = 30000;       // never wait more than 30 s between attempts
const STABLE_CALL_MS = 10000;       // a call up this long resets the backoff
const DISCONNECTED_GRACE_MS = 4000; // ICE "disconnected" this long counts as a drop
const STATS_EVERY_MS = 1000;
const SECRET_MARGIN_S = 10;         // do not start a call with a secret about to expire
const MAX_EVENTS_SHOWN = 200;

let helperOn = true;  // GET /web/config
let want = false;     // the user asked to be in a call
let call = null;      // the current attempt or live call
let attempt = 0;      // failed attempts since the last stable call
let retryTimer = null;
let cachedSecret = null;
let audioCtx = null;
let droppedBefore = false;  // the next session.created is a reconnect
let conversationId = null;  // the conversation of this Connect (new at each Connect)

/** An unguessable conversation token: whoever holds it continues the conversation. */
function newConversationId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return 'conv_' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A failure to show the user: `retry` when trying again later may help. */
class CallError extends Error {
  constructor(code, message, { retry = false, retryAfterS = null, askSecret = false, staleSecret = false } = {}) {
    super(message);
    Object.assign(this, { code, retry, retryAfterS, askSecret, staleSecret });
  }
}

// ---- status, errors -------------------------------------------------------------------------

function setPhase(phase, text) {
  ui.status.dataset.phase = phase;
  ui.status.textContent = text;
  const active = phase !== 'idle' && phase !== 'error';
  ui.connect.disabled = active;
  ui.disconnect.disabled = !active;
  ui.agent.disabled = active;
  ui.roomJoin.disabled = active;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = '';
}

// ---- HTTP -----------------------------------------------------------------------------------

/** fetch with voxrelay's JSON errors turned into CallErrors. */
async function api(path, init) {
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new CallError('unreachable', `Cannot reach the voxrelay server at ${location.host} (${e.message}). Is it running?`, { retry: true });
  }
  if (r.ok) return r;
  const body = await r.json().catch(() => null);
  const err = (body && body.error) || {};
  const message = err.message || `HTTP ${r.status}`;
  const retryAfterS = Number(r.headers.get('Retry-After')) || null;
  if (r.status === 429) throw new CallError(err.code || 'rate_limited', `Rate limited: ${message}`, { retry: true, retryAfterS });
  if (r.status === 503) throw new CallError(err.code || 'overloaded', `The server is busy: ${message}`, { retry: true, retryAfterS });
  if (r.status >= 500) throw new CallError(err.code || 'server_error', `Server error: ${message}`, { retry: true });
  if (r.status === 401 && !ui.secret.value.trim() && helperOn) {
    // Our minted secret expired, or the server restarted and forgot it: mint another.
    cachedSecret = null;
    throw new CallError(err.code || 'unauthorized', 'The client secret is no longer valid; getting a new one', { retry: true, staleSecret: true });
  }
  if (err.code === 'web_session_disabled') {
    helperOn = false;
    throw new CallError(err.code, `${message}. Paste one under "Use your own client secret".`, { askSecret: true });
  }
  if (err.code === 'agent_not_configured' || err.code === 'unknown_agent') {
    throw new CallError(err.code, `Agent "${ui.agent.value}" is not available: ${message}`);
  }
  if (r.status === 401) throw new CallError(err.code || 'unauthorized', `The client secret was refused: ${message}`, { askSecret: true });
  throw new CallError(err.code || `http_${r.status}`, `${message} (HTTP ${r.status})`);
}

async function getSecret(agent) {
  const own = ui.secret.value.trim();
  if (own) return { value: own };
  const now = Date.now() / 1000;
  if (cachedSecret && cachedSecret.agent === agent && cachedSecret.conversation === conversationId &&
      cachedSecret.expiresAt - now > SECRET_MARGIN_S) return { ...cachedSecret, fresh: false };
  if (!helperOn) {
    throw new CallError('secret_required', 'This server does not mint client secrets for this page (its session helper is off). ' +
      'Paste a client secret minted with the API key under "Use your own client secret".', { askSecret: true });
  }
  const r = await api('/web/session', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ agent, turn_detection: { type: 'server_vad' }, conversation: conversationId }),
  });
  const s = await r.json();
  cachedSecret = { value: s.client_secret.value, expiresAt: s.client_secret.expires_at, agent, conversation: conversationId, iceServers: s.ice_servers };
  return { ...cachedSecret, fresh: true };
}

// ---- microphone -----------------------------------------------------------------------------

async function getMic() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new CallError('insecure_context', 'This browser offers microphones only to https:// pages and http://localhost; ' +
      'open the page over HTTPS or on localhost.');
  }
  const deviceId = ui.mic.value;
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: deviceId ? { deviceId: { exact: deviceId } } : true });
  } catch (e) {
    if (e.name === 'NotAllowedError' || e.name === 'SecurityError') {
      throw new CallError('mic_denied', 'Microphone access was denied. Allow the microphone for this site ' +
        '(the icon in the address bar or the site settings) and press Connect again.');
    }
    if (e.name === 'NotFoundError' || e.name === 'OverconstrainedError') {
      throw new CallError('mic_missing', 'No microphone found (or the selected one is gone). Plug one in or pick another.');
    }
    throw new CallError('mic_failed', `The microphone could not be opened: ${e.message || e.name}. Another application may be using it.`);
  }
}

async function listMics(activeId) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const mics = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === 'audioinput');
  const keep = activeId ?? ui.mic.value;
  ui.mic.replaceChildren(new Option('Default microphone', ''));
  mics.forEach((d, i) => { if (d.deviceId && d.deviceId !== 'default') ui.mic.add(new Option(d.label || `Microphone ${i + 1}`, d.deviceId)); });
  if ([...ui.mic.options].some((o) => o.value === keep)) ui.mic.value = keep;
}

/** Drives the input level meter from the microphone stream; returns a stop function. */
function levelMeter(stream) {
  audioCtx = audioCtx || new AudioContext();
  audioCtx.resume().catch(() => {});
  const source = audioCtx.createMediaStreamSource(stream);
  const analyser = audioCtx.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let running = true;
  const tick = () => {
    if (!running) return;
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    ui.level.value = Math.min(1, Math.sqrt(sum / buf.length) * 4);
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  return () => { running = false; source.disconnect(); ui.level.value = 0; };
}

async function switchMic() {
  const c = call;
  if (!c || !c.pc || !c.mic) return;
  try {
    const mic = await getMic();
    const sender = c.pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
    if (sender) await sender.replaceTrack(mic.getAudioTracks()[0]);  // no renegotiation needed
    c.mic.getTracks().forEach((t) => t.stop());
    c.stopMeter();
    c.mic = mic;
    c.stopMeter = levelMeter(mic);
  } catch (e) {
    showError(e.message);
  }
}

// ---- the call -------------------------------------------------------------------------------

async function startCall() {
  clearTimeout(retryTimer);
  const agent = ui.agent.value;
  const c = { agent, closing: false, timers: [], stopMeter: () => {} };
  call = c;
  setPhase(attempt ? 'reconnecting' : 'connecting', attempt ? `Reconnecting (attempt ${attempt + 1})…` : 'Connecting…');
  resetStats();
  try {
    c.mic = await getMic();
    if (call !== c) return teardown(c);
    listMics(c.mic.getAudioTracks()[0].getSettings().deviceId).catch(() => {});
    c.stopMeter = levelMeter(c.mic);
    const secret = await getSecret(agent);
    if (call !== c) return teardown(c);
    c.secret = secret.value;
    c.freshSecret = !!secret.fresh;
    const pc = new RTCPeerConnection(secret.iceServers ? { iceServers: secret.iceServers } : undefined);
    c.pc = pc;
    pc.addTrack(c.mic.getAudioTracks()[0], c.mic);
    pc.ontrack = (e) => {
      ui.remote.srcObject = e.streams[0] || new MediaStream([e.track]);
      ui.remote.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => watchConnection(c);
    const dc = pc.createDataChannel('oai-events');
    dc.onmessage = (e) => onServerEvent(c, e.data);
    dc.onclose = () => { if (!c.closing) dropped(c, 'the event channel closed'); };
    // Chrome reports our own DELETE/close as an error ("User-Initiated Abort"); a real failure
    // also closes the channel, which onclose handles, so errors are not shown from here.
    dc.onerror = () => {};
    await pc.setLocalDescription(await pc.createOffer());
    const r = await api('/v1/realtime/calls', {
      method: 'POST', body: pc.localDescription.sdp,
      headers: { Authorization: `Bearer ${c.secret}`, 'Content-Type': 'application/sdp' },
    });
    c.location = r.headers.get('Location');
    const answer = await r.text();
    if (call !== c) return teardown(c);
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    c.timers.push(setInterval(() => updateStats(c).catch(() => {}), STATS_EVERY_MS));
  } catch (e) {
    failed(c, e instanceof CallError ? e : new CallError('failed', `The call could not start: ${e.message || e}`, { retry: true }));
  }
}

function watchConnection(c) {
  const state = c.pc.connectionState;
  clearTimeout(c.graceTimer);
  if (state === 'failed') restartOrDrop(c, 'the connection failed');
  else if (state === 'disconnected') c.graceTimer = setTimeout(() => restartOrDrop(c, 'the connection was lost'), DISCONNECTED_GRACE_MS);
  else if (state === 'closed' && !c.closing) dropped(c, 'the server ended the call');
}

/** A lost path: first an ICE restart (same call, same conversation), then a new call. */
async function restartOrDrop(c, why) {
  if (call !== c || c.closing) return;
  if (!(await restartIce(c))) dropped(c, why);
}

/** The SDP fragment of an ICE restart (RFC 8840): our new credentials and candidates. */
function iceFragment(sdp) {
  const lines = sdp.split(/\r?\n/);
  const first = (p) => lines.find((l) => l.startsWith(p));
  const media = first('m=') || 'm=audio 9 UDP/TLS/RTP/SAVPF 111';
  return [first('a=ice-ufrag:'), first('a=ice-pwd:'), media, first('a=mid:'),
    ...lines.filter((l) => l.startsWith('a=candidate:')), 'a=end-of-candidates', '']
    .filter((l) => l !== undefined).join('\r\n');
}

/** The answer after an ICE restart: the previous one with the server's new credentials and
 * candidates (nothing else changes: RFC 9725 §4.3.2). */
function restartedAnswer(previous, fragment) {
  const frag = fragment.split(/\r?\n/);
  const value = (p) => (frag.find((l) => l.startsWith(p)) || '').slice(p.length);
  const ufrag = value('a=ice-ufrag:'), pwd = value('a=ice-pwd:');
  if (!ufrag || !pwd) throw new Error('the server sent no new ICE credentials');
  const kept = previous.split(/\r?\n/).filter((l) => l && !l.startsWith('a=candidate:') && l !== 'a=end-of-candidates')
    .map((l) => (l.startsWith('a=ice-ufrag:') ? `a=ice-ufrag:${ufrag}` : l.startsWith('a=ice-pwd:') ? `a=ice-pwd:${pwd}` : l));
  // The candidates go in the first m-section (the bundle's tagged one).
  const at = kept.findIndex((l) => l.startsWith('a=mid:')) + 1 || kept.length;
  kept.splice(at, 0, ...frag.filter((l) => l.startsWith('a=candidate:')));
  return [...kept, ''].join('\r\n');
}

/** Waits (bounded) until the browser has gathered its candidates. */
function gathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === 'complete') { pc.removeEventListener('icegatheringstatechange', done); resolve(); } };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, ms);
  });
}

/** ICE restart of the live call: PATCH its resource with new credentials (If-Match: *); the
 * server answers with its own. Returns whether the call moved to the new path. */
async function restartIce(c) {
  if (c.restarting || !c.pc || !c.location || c.pc.signalingState !== 'stable') return false;
  c.restarting = true;
  try {
    await c.pc.setLocalDescription(await c.pc.createOffer({ iceRestart: true }));
    await gathered(c.pc, 3000);
    const r = await api(c.location, {
      method: 'PATCH', body: iceFragment(c.pc.localDescription.sdp),
      headers: { Authorization: `Bearer ${c.secret}`, 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': '*' },
    });
    const fragment = await r.text();
    if (call !== c) return true;
    await c.pc.setRemoteDescription({ type: 'answer', sdp: restartedAnswer(c.pc.remoteDescription.sdp, fragment) });
    note('The network changed: the call moved to the new path.');
    return true;
  } catch (e) {
    if (c.pc && c.pc.signalingState === 'have-local-offer') await c.pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
    return false;
  } finally {
    c.restarting = false;
  }
}

/** Ends the call locally and on the server (best effort). */
function teardown(c) {
  c.closing = true;
  c.timers.forEach((t) => clearInterval(t));
  clearTimeout(c.graceTimer);
  clearTimeout(c.stableTimer);
  c.stopMeter();
  if (c.location && c.secret) {
    fetch(c.location, { method: 'DELETE', keepalive: true, headers: { Authorization: `Bearer ${c.secret}` } }).catch(() => {});
  }
  if (c.pc) c.pc.close();
  if (c.mic) c.mic.getTracks().forEach((t) => t.stop());
  if (call === c) {
    call = null;
    ui.remote.srcObject = null;
    setTurn('idle');
    setSpeaking(false);
  }
}

function failed(c, err) {
  if (call !== c) return;
  teardown(c);
  if (err.askSecret) { ui.secretBox.open = true; ui.secret.focus(); }
  // A cached secret the server no longer knows (it restarted): mint one and retry at once.
  if (want && err.staleSecret && !c.freshSecret) return startCall();
  if (want && err.retry) return scheduleRetry(err.message, err.retryAfterS);
  want = false;
  showError(err.message);
  setPhase('error', 'Not connected.');
}

function dropped(c, why) {
  if (call !== c || c.closing) return;
  teardown(c);
  note(`Call dropped: ${why}.`);
  droppedBefore = true;
  if (want) scheduleRetry(`Call dropped: ${why}`);
}

/** "Equal jitter": half the exponential delay fixed, half random, so clients spread out. */
function backoffMs(n) {
  const exp = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** n);
  return exp / 2 + Math.random() * (exp / 2);
}

function scheduleRetry(why, retryAfterS) {
  const delay = Math.max(backoffMs(attempt), (retryAfterS || 0) * 1000);
  attempt += 1;
  setPhase('reconnecting', `${why}${/[.?!]$/.test(why) ? '' : '.'} Retrying in ${Math.ceil(delay / 1000)} s (attempt ${attempt + 1})…`);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(startCall, delay);
}

function connect() {
  if (want) return;
  want = true;
  attempt = 0;
  conversationId = newConversationId();
  clearError();
  startCall();
}

function disconnect() {
  want = false;
  clearTimeout(retryTimer);
  if (call) teardown(call);
  setPhase('idle', 'Disconnected.');
}

/** A new network invalidates the ICE path: an ICE restart keeps the call and its
 * conversation; only when that fails does a new call start. */
function networkChanged() {
  if (!want) return;
  if (call && call.pc && call.location) return restartOrDrop(call, 'the network changed');
  if (call && call.pc) return dropped(call, 'the network changed');
  attempt = 0;
  startCall();
}

// ---- server events --------------------------------------------------------------------------

const TURN_TEXT = { idle: 'idle', speaking: 'speaking', stopped: 'speech stopped', committed: 'turn committed' };

function setTurn(state) {
  ui.turn.dataset.state = state;
  ui.turn.textContent = TURN_TEXT[state];
}

function setSpeaking(on, interrupted = false) {
  ui.speaking.dataset.speaking = String(on);
  ui.speaking.dataset.interrupted = String(interrupted);
  ui.speaking.textContent = on ? 'speaking' : interrupted ? 'interrupted' : 'silent';
}

function entry(role, key) {
  let li = key && ui.conversation.querySelector(`li[data-key="${CSS.escape(key)}"]`);
  if (li) return li;
  li = document.createElement('li');
  li.dataset.role = role;
  if (key) li.dataset.key = key;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = role === 'user' ? 'You' : role === 'agent' ? 'Agent' : '';
  const text = document.createElement('span');
  text.className = 'text';
  const meta = document.createElement('span');
  meta.className = 'meta';
  li.append(who, text, meta);
  ui.conversation.append(li);
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
  return li;
}

function setEntry(li, { text, append, meta, status }) {
  if (text !== undefined) li.querySelector('.text').textContent = text;
  if (append) li.querySelector('.text').textContent += append;
  if (meta !== undefined) li.querySelector('.meta').textContent = meta;
  if (status) li.dataset.status = status;
}

function note(text) {
  setEntry(entry('note'), { text });
}

function logEvent(ev, t) {
  const li = document.createElement('li');
  li.dataset.type = ev.type;
  li.textContent = `+${(t / 1000).toFixed(2)} s ${ev.type}${ev.delta ? ` ${JSON.stringify(ev.delta)}` : ''}`;
  ui.events.append(li);
  while (ui.events.children.length > MAX_EVENTS_SHOWN) ui.events.firstElementChild.remove();
}

function onServerEvent(c, data) {
  if (call !== c) return;
  let ev;
  try { ev = JSON.parse(data); } catch { return; }
  logEvent(ev, performance.now());
  const respId = ev.response_id || (ev.response && ev.response.id);
  switch (ev.type) {
    case 'session.created':
      setPhase('connected', `Connected to the ${c.agent} agent. Speak, then pause.`);
      c.stableTimer = setTimeout(() => { attempt = 0; }, STABLE_CALL_MS);
      if (droppedBefore) note('Reconnected: a new call continuing the conversation (voxrelay calls take no ICE restart).');
      droppedBefore = false;
      break;
    case 'input_audio_buffer.speech_started':
      setTurn('speaking');
      setEntry(entry('user', ev.item_id), { text: '(speaking…)', status: 'speaking' });
      c.speechStartMs = ev.audio_start_ms;
      break;
    case 'input_audio_buffer.speech_stopped': {
      setTurn('stopped');
      const secs = ((ev.audio_end_ms - (c.speechStartMs ?? ev.audio_end_ms)) / 1000).toFixed(1);
      setEntry(entry('user', ev.item_id), { text: '(speech)', meta: `${secs} s`, status: 'stopped' });
      break;
    }
    case 'input_audio_buffer.committed':
      setTurn('committed');
      setEntry(entry('user', ev.item_id), { status: 'committed' });
      break;
    case 'input_audio_buffer.cleared':
      setTurn('idle');
      break;
    case 'conversation.item.input_audio_transcription.completed':
      setEntry(entry('user', ev.item_id), { text: ev.transcript });
      break;
    case 'response.created':
      setEntry(entry('agent', respId), { text: '', meta: 'responding…', status: 'in_progress' });
      break;
    case 'response.audio_transcript.delta':
    case 'response.output_audio_transcript.delta':
    case 'response.text.delta':
    case 'response.output_text.delta': {
      const li = entry('agent', respId);
      if (ev.item_id) li.dataset.item = ev.item_id;
      setEntry(li, { append: ev.delta });
      break;
    }
    case 'response.audio_transcript.done':
    case 'response.output_audio_transcript.done':
      if (typeof ev.transcript === 'string') setEntry(entry('agent', respId), { text: ev.transcript });
      break;
    case 'response.done': {
      const status = ev.response.status;
      const meta = status === 'completed' ? '' : status === 'cancelled' ? 'interrupted (barge-in)' : status;
      setEntry(entry('agent', respId), { meta, status });
      break;
    }
    case 'output_audio_buffer.started':
      setSpeaking(true);
      break;
    case 'output_audio_buffer.stopped':
      setSpeaking(false);
      break;
    case 'output_audio_buffer.cleared':
      setSpeaking(false, true);
      break;
    case 'conversation.item.truncated': {
      const li = ui.conversation.querySelector(`li[data-item="${CSS.escape(ev.item_id)}"]`);
      if (li) setEntry(li, { meta: `interrupted after ${(ev.audio_end_ms / 1000).toFixed(1)} s`, status: 'cancelled' });
      break;
    }
    case 'error':
      showError(`Server: ${ev.error && ev.error.message}`);
      break;
  }
}

// ---- stats ----------------------------------------------------------------------------------

function resetStats() {
  for (const el of [ui.rtt, ui.jitter, ui.loss, ui.bitrate, ui.agentLevel, ui.codec]) {
    el.textContent = '–';
    delete el.dataset.value;
  }
}

function show(el, text, value) {
  el.textContent = text;
  el.dataset.value = value;
}

async function updateStats(c) {
  if (!c.pc || call !== c) return;
  const report = await c.pc.getStats();
  let pair = null, inb = null, out = null, remoteIn = null;
  const byId = new Map();
  report.forEach((s) => {
    byId.set(s.id, s);
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') inb = s;
    if (s.type === 'outbound-rtp' && s.kind === 'audio') out = s;
    if (s.type === 'remote-inbound-rtp' && s.kind === 'audio') remoteIn = s;
  });
  const rtt = pair && pair.currentRoundTripTime !== undefined ? pair.currentRoundTripTime : remoteIn && remoteIn.roundTripTime;
  if (rtt !== undefined && rtt !== null) show(ui.rtt, `${(rtt * 1000).toFixed(0)} ms`, rtt * 1000);
  const now = performance.now();
  if (inb) {
    show(ui.jitter, `${((inb.jitter || 0) * 1000).toFixed(1)} ms`, (inb.jitter || 0) * 1000);
    const lost = Math.max(0, inb.packetsLost || 0), got = inb.packetsReceived || 0;
    const pct = got + lost ? (100 * lost) / (got + lost) : 0;
    show(ui.loss, `${pct.toFixed(1)} % (${lost} of ${got + lost} packets)`, pct);
    show(ui.agentLevel, `${(inb.audioLevel || 0).toFixed(3)} (energy ${(inb.totalAudioEnergy || 0).toFixed(4)})`, inb.audioLevel || 0);
    ui.agentLevel.dataset.energy = inb.totalAudioEnergy || 0;
    const codec = byId.get(inb.codecId);
    if (codec) ui.codec.textContent = `${codec.mimeType.replace(/^audio\//, '')} ${codec.clockRate / 1000} kHz`;
  }
  if (inb && out && c.prev) {
    const dt = (now - c.prev.t) / 1000;
    const kin = ((inb.bytesReceived - c.prev.in) * 8) / dt / 1000, kout = ((out.bytesSent - c.prev.out) * 8) / dt / 1000;
    show(ui.bitrate, `${kin.toFixed(0)} / ${kout.toFixed(0)} kbit/s`, kin);
    ui.bitrate.dataset.out = kout;
  }
  if (inb && out) c.prev = { t: now, in: inb.bytesReceived, out: out.bytesSent };
}

// ---- wiring ---------------------------------------------------------------------------------

ui.form.addEventListener('submit', (e) => { e.preventDefault(); connect(); });
ui.disconnect.addEventListener('click', disconnect);
ui.mic.addEventListener('change', switchMic);
window.addEventListener('online', networkChanged);
window.addEventListener('offline', () => { if (want) setPhase('reconnecting', 'The network is offline; the call resumes when it is back…'); });
if (navigator.connection && navigator.connection.addEventListener) navigator.connection.addEventListener('change', networkChanged);
if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) navigator.mediaDevices.addEventListener('devicechange', () => listMics().catch(() => {}));
window.addEventListener('pagehide', () => { if (call) teardown(call); if (room) closeRoom(room); });
listMics().catch(() => {});
fetch('/web/config').then((r) => r.json()).then((cfg) => {
  helperOn = !!cfg.session_helper;
  if (!helperOn) {
    ui.secretBox.open = true;
    $('secret-hint').textContent = 'This server does not mint secrets for this page: paste a client secret minted with the API key (POST /v1/realtime/sessions).';
  }
}).catch(() => showError(`Cannot reach the voxrelay server at ${location.host}. Is it running?`));

// ---- room mode (PROTOCOL.md §4) -------------------------------------------------------------
//
// A room token from the same-origin helper (POST /web/room-token) or pasted; an offer with the
// microphone on the first (sendrecv) m-line and two more receive-only ones: three slots, on
// which the server forwards the loudest other speakers. One <audio> per slot, found by mid
// (slot.assigned says who a slot carries). Events and chat ride on "room-events". No retry:
// a dropped room is shown as an error and Join joins again.

const ROOM_SLOTS = 3;
const NAME_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;
const TAB = Math.random().toString(36).slice(2, 6);  // this tab's identity suffix: tabs never replace each other
let room = null;      // { name, token, pc, dc, mic, identity, people: Map, location, closing }
let roomTokenCache = null;

function setRoomPhase(phase, text) {
  ui.status.dataset.phase = phase;
  ui.status.textContent = text;
  const active = phase !== 'idle' && phase !== 'error', up = phase === 'connected';
  ui.roomJoin.disabled = ui.roomName.disabled = ui.roomUser.disabled = ui.connect.disabled = active;
  ui.roomLeave.disabled = !active;
  ui.roomMute.disabled = ui.chatText.disabled = ui.chatSend.disabled = !up;
}

/** A room-safe identity from a display name, unique to this tab. */
function identityFor(name) {
  const slug = name.replace(/[^A-Za-z0-9_.:@-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 100);
  return `${slug || 'guest'}-${TAB}`;
}

async function roomFetch(path, init) {
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new Error(`Cannot reach the voxrelay server at ${location.host} (${e.message}). Is it running?`);
  }
  if (r.ok) return r;
  const err = ((await r.json().catch(() => null)) || {}).error || {};
  if (err.code === 'web_session_disabled') ui.roomTokenBox.open = true;
  throw new Error(`${err.message || r.statusText} (HTTP ${r.status}${err.code ? `, ${err.code}` : ''})`);
}

async function getRoomToken(roomName, name) {
  const own = ui.roomToken.value.trim();
  if (own) return own;
  const identity = identityFor(name), key = `${roomName}\n${identity}\n${name}`;
  const c = roomTokenCache;
  if (c && c.key === key && c.expiresAt - Date.now() / 1000 > 60) return c.token;
  const r = await roomFetch('/web/room-token', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ room: roomName, identity, name }),
  });
  const t = await r.json();
  roomTokenCache = { key, token: t.token, expiresAt: t.expires_at };
  return t.token;
}

async function joinRoom() {
  const roomName = ui.roomName.value.trim(), name = ui.roomUser.value.trim();
  if (!NAME_RE.test(roomName)) return showError('A room name is 1 to 128 letters, digits and -_.:@.');
  if (!name) return showError('Type your name: the others see it.');
  clearError();
  ui.chat.replaceChildren();
  const r = { name: roomName, you: name, people: new Map(), closing: false, stopMeter: () => {} };
  room = r;
  setRoomPhase('connecting', `Joining room ${roomName}…`);
  try {
    r.mic = await getMic();
    if (room !== r) return closeRoom(r);
    r.stopMeter = levelMeter(r.mic);
    r.token = await getRoomToken(roomName, name);
    if (room !== r) return closeRoom(r);
    const pc = (r.pc = new RTCPeerConnection());
    pc.addTransceiver(r.mic.getAudioTracks()[0], { direction: 'sendrecv', streams: [r.mic] });
    for (let i = 1; i < ROOM_SLOTS; i++) pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = (e) => {
      const el = slotAudio(r, e.transceiver.mid);
      el.srcObject = new MediaStream([e.track]);
      el.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed') roomDropped(r, 'the connection failed');
    };
    const dc = (r.dc = pc.createDataChannel('room-events'));
    dc.onmessage = (e) => onRoomEvent(r, e.data);
    dc.onclose = () => roomDropped(r, 'the room closed the connection');
    dc.onerror = () => {};  // a real failure also closes the channel
    await pc.setLocalDescription(await pc.createOffer());
    for (const t of pc.getTransceivers()) slotAudio(r, t.mid);
    const resp = await roomFetch(`/v1/rooms/${encodeURIComponent(roomName)}/join`, {
      method: 'POST', body: pc.localDescription.sdp,
      headers: { Authorization: `Bearer ${r.token}`, 'Content-Type': 'application/sdp' },
    });
    r.location = resp.headers.get('Location');
    const answer = await resp.text();
    if (room !== r) return closeRoom(r);
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  } catch (e) {
    if (room !== r) return;
    closeRoom(r);
    showError(`Could not join room ${roomName}: ${e.message || e}`);
    setRoomPhase('error', 'Not in a room.');
  }
}

/** The <audio> element of the slot on m-line `mid`. */
function slotAudio(r, mid) {
  let el = ui.roomAudio.querySelector(`audio[data-mid="${CSS.escape(mid)}"]`);
  if (!el) {
    el = document.createElement('audio');
    el.autoplay = true;
    el.dataset.mid = mid;
    el.dataset.identity = '';
    ui.roomAudio.append(el);
  }
  return el;
}

/** Ends the room here and, once joined, on the server (best effort; outlives the page). */
function closeRoom(r) {
  r.closing = true;
  if (r.location && !r.left) {
    r.left = true;
    fetch(r.location, { method: 'DELETE', keepalive: true, headers: { Authorization: `Bearer ${r.token}` } }).catch(() => {});
  }
  r.stopMeter();
  if (r.pc) r.pc.close();
  if (r.mic) r.mic.getTracks().forEach((t) => t.stop());
  if (room !== r) return;
  room = null;
  ui.people.replaceChildren();
  ui.roomAudio.replaceChildren();
  ui.roomMute.setAttribute('aria-pressed', 'false');
  ui.roomMute.textContent = 'Mute';
}

async function leaveRoom() {
  const r = room;
  if (!r) return;
  r.closing = true;
  setRoomPhase('connecting', `Leaving room ${r.name}…`);
  if (r.location && !r.left) {
    r.left = true;  // leave first, then close: the others see "left", not a dropped connection
    await fetch(r.location, { method: 'DELETE', signal: AbortSignal.timeout(5000), headers: { Authorization: `Bearer ${r.token}` } })
      .catch(() => {});
  }
  closeRoom(r);
  setRoomPhase('idle', `Left room ${r.name}.`);
}

function roomDropped(r, why) {
  if (room !== r || r.closing) return;
  closeRoom(r);
  showError(`Out of room ${r.name}: ${why}. Press Join to join again.`);
  setRoomPhase('error', 'Not in a room.');
}

function person(r, p, you = false) {
  const old = r.people.get(p.identity);
  const li = old || document.createElement('li');
  if (!old) {
    const who = document.createElement('span'), speak = document.createElement('span'), mute = document.createElement('span');
    who.className = 'who';
    speak.className = 'pill speak';
    mute.className = 'pill mute';
    mute.textContent = 'muted';
    li.append(who, speak, mute);
    li.dataset.identity = p.identity;
    li.dataset.speaking = 'false';
    r.people.set(p.identity, li);
    ui.people.append(li);
  }
  li.querySelector('.who').textContent = you ? `${p.name || p.identity} (you)` : p.name || p.identity;
  li.title = p.identity;
  if (you) li.dataset.you = 'true';
  setPerson(r, p.identity, { muted: !!p.muted });
}

function setPerson(r, identity, { muted, speaking }) {
  const li = r.people.get(identity);
  if (!li) return;
  if (muted !== undefined) li.dataset.muted = String(muted);
  if (speaking !== undefined && li.dataset.speaking !== String(speaking)) {
    li.dataset.speaking = String(speaking);
    li.querySelector('.speak').textContent = speaking ? 'speaking' : '';
  }
}

function chatLine(who, text, mine = false) {
  const li = document.createElement('li');
  const b = document.createElement('span');
  b.className = 'who';
  b.textContent = who && `${who}:`;
  li.append(b, who ? ' ' : '', text);
  if (mine) li.dataset.mine = 'true';
  if (!who) li.dataset.note = 'true';
  ui.chat.append(li);
  while (ui.chat.children.length > MAX_EVENTS_SHOWN) ui.chat.firstElementChild.remove();
  ui.chat.scrollTop = ui.chat.scrollHeight;
}

function roomStatus(r) {
  const n = r.people.size - 1;
  setRoomPhase('connected', `In room ${r.name} as ${r.you}, ${n ? `with ${n} other${n === 1 ? '' : 's'}` : 'alone so far'}.`);
}

function nameOf(r, identity) {
  const li = r.people.get(identity);
  return li ? li.querySelector('.who').textContent : identity;
}

function onRoomEvent(r, data) {
  if (room !== r) return;
  let ev;
  try { ev = JSON.parse(data); } catch { return; }
  switch (ev.type) {
    case 'room.joined':
      r.identity = ev.identity;
      person(r, { identity: ev.identity, name: r.you }, true);
      ev.participants.forEach((p) => person(r, p));
      roomStatus(r);
      break;
    case 'participant.joined':
      person(r, ev.participant);
      roomStatus(r);
      chatLine('', `${ev.participant.name || ev.participant.identity} joined.`);
      break;
    case 'participant.left': {
      const li = r.people.get(ev.identity);
      if (li) chatLine('', `${nameOf(r, ev.identity)} left${ev.reason === 'left' ? '' : ` (${ev.reason.replace(/_/g, ' ')})`}.`);
      if (li) li.remove();
      r.people.delete(ev.identity);
      roomStatus(r);
      break;
    }
    case 'track.muted':
    case 'track.unmuted':
      setPerson(r, ev.identity, { muted: ev.type === 'track.muted' });
      if (ev.identity === r.identity) setMuted(r, ev.type === 'track.muted');  // also when an admin did it
      break;
    case 'active_speakers': {
      const on = new Set(ev.speakers.map((s) => s.identity));
      r.people.forEach((_, id) => setPerson(r, id, { speaking: on.has(id) }));
      break;
    }
    case 'slot.assigned':
      slotAudio(r, ev.mid).dataset.identity = ev.identity || '';
      break;
    case 'data.received':
      if (ev.payload && typeof ev.payload.text === 'string') chatLine(nameOf(r, ev.from), ev.payload.text);
      break;
    case 'error':
      showError(`Room: ${ev.error && ev.error.message}`);
      break;
  }
}

function setMuted(r, muted) {
  r.mic.getAudioTracks().forEach((t) => { t.enabled = !muted; });
  ui.roomMute.setAttribute('aria-pressed', String(muted));
  ui.roomMute.textContent = muted ? 'Unmute' : 'Mute';
}

function toggleMute() {
  const r = room;
  if (!r || !r.dc || r.dc.readyState !== 'open') return;
  const muted = ui.roomMute.getAttribute('aria-pressed') !== 'true';
  setMuted(r, muted);
  r.dc.send(JSON.stringify({ type: 'mute', muted }));
}

function sendChat() {
  const r = room, text = ui.chatText.value.trim();
  if (!r || !r.dc || r.dc.readyState !== 'open' || !text) return;
  r.dc.send(JSON.stringify({ type: 'data.send', topic: 'chat', payload: { text } }));
  chatLine(`${r.you} (you)`, text, true);
  ui.chatText.value = '';
}

ui.roomForm.addEventListener('submit', (e) => { e.preventDefault(); if (!room) joinRoom(); });
ui.roomLeave.addEventListener('click', leaveRoom);
ui.roomMute.addEventListener('click', toggleMute);
ui.chatForm.addEventListener('submit', (e) => { e.preventDefault(); sendChat(); });

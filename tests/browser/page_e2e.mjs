// End-to-end test of the embedded web page (GET /) in a real headless Chromium.
//
// Run by tests/browser_page.rs against a server it started on 127.0.0.1; runnable by hand too:
//   VOXRELAY_URL=http://127.0.0.1:8080 node tests/browser/page_e2e.mjs
// The page runs unmodified; this script only observes it: an init script records the page's
// DOM changes (turn state, agent speaking, status, event log) with timestamps and samples
// getStats() of the page's RTCPeerConnection every 50 ms. Nothing is asserted here: the JSON
// summary on stdout is what the Rust test asserts on.
//
// Env:
//   VOXRELAY_URL     server base URL (default http://127.0.0.1:8080)
//   E2E_SCREENSHOT   where to save a screenshot of the page mid-call (default: none)
//   CHROMIUM         browser binary (default /usr/bin/chromium; never downloaded)
//   E2E_TIMEOUT_MS   overall budget (default 60000); the browser is killed when it runs out
//   VOXRELAY_API_KEY when set, the server drops the call mid-way (DELETE with the API key, as an
//                    operator or a restart would) and the page must reconnect by itself
// Fake microphone: tests/fixtures/speech.wav framed as 1 s silence + speech + 3 s silence
// (written to a temp dir; Chromium loops it), so the echo agent answers in the silence.
// Exit: 0 the run completed (whatever it observed), 1 it did not (timeout, page error), 2 setup.

import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.VOXRELAY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = Number(process.env.E2E_TIMEOUT_MS || 60000);
const SHOT = process.env.E2E_SCREENSHOT || null;
const KEY = process.env.VOXRELAY_API_KEY || null;
const PHONE = { width: 390, height: 844 };  // a phone-sized viewport
// The fake microphone (Chromium loops it): the caller speaks again 1.2 s after the first turn,
// while the echo of that turn plays (barge-in), then stays silent long enough for the second
// echo to play out.
const SPEECH = [1, 'speech', 1.2, 'speech', 4];

const summary = { completed: false, server: BASE, chromium: null, viewport: PHONE, errors: [], console: [] };
let browser = null;
const tmp = mkdtempSync(join(tmpdir(), 'voxrelay-page-e2e-'));

function finish(code) {
  console.log(JSON.stringify(summary, null, 2));
  try { if (browser && browser.process()) browser.process().kill('SIGKILL'); } catch {}
  rmSync(tmp, { recursive: true, force: true });
  process.exit(code);
}
setTimeout(() => { summary.errors.push(`overall timeout of ${TIMEOUT} ms`); finish(1); }, TIMEOUT).unref();

/** 16-bit mono PCM WAV: `parts` are seconds of silence or 'speech' (the fixture's samples). */
function micWav(parts) {
  const src = readFileSync(join(here, '..', 'fixtures', 'speech.wav'));
  let off = 12, rate = 0, data = null;
  while (off + 8 <= src.length) {
    const id = src.toString('ascii', off, off + 4), len = src.readUInt32LE(off + 4);
    if (id === 'fmt ') {
      if (src.readUInt16LE(off + 8) !== 1 || src.readUInt16LE(off + 10) !== 1 || src.readUInt16LE(off + 22) !== 16) throw new Error('speech.wav must be 16-bit mono PCM');
      rate = src.readUInt32LE(off + 12);
    }
    if (id === 'data') data = src.subarray(off + 8, off + 8 + len);
    off += 8 + len + (len & 1);
  }
  if (!rate || !data) throw new Error('speech.wav has no fmt/data chunk');
  const pcm = Buffer.concat(parts.map((p) => (p === 'speech' ? data : Buffer.alloc(Math.round(p * rate) * 2))));
  const h = Buffer.alloc(44);
  h.write('RIFF', 0); h.writeUInt32LE(36 + pcm.length, 4); h.write('WAVE', 8); h.write('fmt ', 12);
  h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(1, 22); h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28); h.writeUInt16LE(2, 32); h.writeUInt16LE(16, 34); h.write('data', 36); h.writeUInt32LE(pcm.length, 40);
  const path = join(tmp, 'mic.wav');
  writeFileSync(path, Buffer.concat([h, pcm]));
  return path;
}

// Runs in the page before its own scripts: records, never changes behaviour.
function observe() {
  const E = (window.__e2e = { pcs: [], marks: [], energy: [], micMax: 0, locations: [], patches: [] });
  const nativeFetch = window.fetch;
  window.fetch = async (...args) => {
    const r = await nativeFetch(...args);
    if (r.headers.get('Location')) E.locations.push(r.headers.get('Location'));
    if (args[1] && args[1].method === 'PATCH') E.patches.push({ t: performance.now(), status: r.status, etag: r.headers.get('ETag') });
    return r;
  };
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); E.pcs.push(this); }
  };
  const mark = (what, value) => E.marks.push({ t: performance.now(), what, value });
  document.addEventListener('submit', () => mark('submit'), true);
  document.addEventListener('DOMContentLoaded', () => {
    const $ = (id) => document.getElementById(id);
    const watch = (el, attr, what) => new MutationObserver(() => mark(what, el.getAttribute(attr)))
      .observe(el, { attributes: true, attributeFilter: [attr] });
    watch($('turn-state'), 'data-state', 'turn');
    watch($('agent-speaking'), 'data-speaking', 'speaking');
    watch($('status'), 'data-phase', 'phase');
    new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => n.dataset && mark('event', n.dataset.type))))
      .observe($('events'), { childList: true });
    setInterval(async () => {
      E.micMax = Math.max(E.micMax, Number($('mic-level').value) || 0);
      const pc = E.pcs[E.pcs.length - 1];
      if (!pc || pc.connectionState === 'closed') return;
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          E.energy.push({ pc: E.pcs.length - 1, t: performance.now(), energy: s.totalAudioEnergy || 0, level: s.audioLevel || 0, packets: s.packetsReceived || 0 });
        }
      });
    }, 50);
  });
}

// The page's visible state, read from its DOM.
function readPage() {
  const $ = (id) => document.getElementById(id);
  const stat = (id) => ({ text: $(id).textContent, value: $(id).dataset.value === undefined ? null : Number($(id).dataset.value) });
  return {
    status: { phase: $('status').dataset.phase, text: $('status').textContent },
    error: $('error').hidden ? null : $('error').textContent,
    turn: $('turn-state').dataset.state,
    agent_speaking: $('agent-speaking').dataset.speaking,
    conversation: [...$('conversation').children].map((li) => ({ role: li.dataset.role, status: li.dataset.status || null,
      text: li.querySelector('.text').textContent, meta: li.querySelector('.meta').textContent })),
    stats: { rtt_ms: stat('stat-rtt'), jitter_ms: stat('stat-jitter'), loss_pct: stat('stat-loss'), bitrate_in_kbps: stat('stat-bitrate'),
      bitrate_out_kbps: Number($('stat-bitrate').dataset.out ?? NaN), agent_level: stat('stat-level'),
      agent_energy: Number($('stat-level').dataset.energy ?? NaN), codec: $('stat-codec').textContent },
    horizontal_overflow_px: document.documentElement.scrollWidth - window.innerWidth,
  };
}

const echoDone = () => [...document.querySelectorAll('#conversation li[data-role="agent"][data-status="completed"] .text')]
  .some((t) => /^\[echo [0-9.]+ s\]$/.test(t.textContent));

try {
  let wav;
  try { wav = micWav(SPEECH); } catch (e) { summary.errors.push(`fake mic WAV: ${e.message}`); finish(2); }
  const args = ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`, '--autoplay-policy=no-user-gesture-required'];
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');  // Chromium refuses to run as root with its sandbox
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 45000 });
  } catch (e) { summary.errors.push(`launching ${CHROMIUM}: ${e.message}`); finish(2); }
  summary.chromium = browser.version();
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, isMobile: false, hasTouch: true });
  const page = await context.newPage();
  page.on('console', (m) => summary.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => summary.errors.push(`pageerror: ${e.message}`));
  await page.addInitScript(observe);
  const resp = await page.goto(`${BASE}/`);
  summary.page_status = resp.status();
  await page.waitForFunction(() => document.getElementById('status').dataset.phase === 'idle');

  // Connect with the keyboard, as a keyboard-only user would.
  await page.focus('#connect');
  await page.keyboard.press('Enter');

  // The echo turn: speech started/stopped, the agent plays it back with "[echo N s]".
  try {
    await page.waitForFunction(echoDone, null, { timeout: Math.max(5000, TIMEOUT - 20000), polling: 100 });
    // Two stats samples for a bitrate, and an RTT.
    await page.waitForFunction(() => ['stat-bitrate', 'stat-rtt'].every((id) => document.getElementById(id).dataset.value !== undefined),
      null, { timeout: 5000, polling: 100 });
  } catch (e) { summary.errors.push(`waiting for the echo turn: ${e.message.split('\n')[0]}`); }
  summary.during_call = await page.evaluate(readPage);
  if (SHOT) {
    mkdirSync(dirname(SHOT), { recursive: true });
    await page.screenshot({ path: SHOT, fullPage: true });
    summary.screenshot = SHOT;
  }

  // The network changes (the browser says it is online again): the page restarts ICE on the
  // same call, which keeps its session and conversation and answers the next turn.
  {
    const before = await page.evaluate(() => ({ t: performance.now(), pcs: window.__e2e.pcs.length,
      echoes: document.querySelectorAll('#conversation li[data-role="agent"][data-status="completed"]').length }));
    await page.evaluate(() => window.dispatchEvent(new Event('online')));
    try {
      await page.waitForFunction((t) => window.__e2e.patches.some((p) => p.t > t), before.t, { timeout: 10000, polling: 100 });
      await page.waitForFunction((n) => document.querySelectorAll('#conversation li[data-role="agent"][data-status="completed"]').length > n,
        before.echoes, { timeout: 20000, polling: 100 });
    } catch (e) { summary.errors.push(`waiting for the ICE restart and the next turn: ${e.message.split('\n')[0]}`); }
    summary.ice_restart = await page.evaluate((b) => ({
      patches: window.__e2e.patches.filter((p) => p.t > b.t).map((p) => ({ status: p.status, etag: p.etag })),
      new_peer_connections: window.__e2e.pcs.length - b.pcs,
      sessions_created_since: window.__e2e.marks.filter((m) => m.t > b.t && m.what === 'event' && m.value === 'session.created').length,
      echoes_before: b.echoes,
      echoes_after: document.querySelectorAll('#conversation li[data-role="agent"][data-status="completed"]').length,
      connection: window.__e2e.pcs[window.__e2e.pcs.length - 1].connectionState,
    }), before);
  }

  // The server drops the call: the page must notice and start a new call by itself.
  if (KEY) {
    const loc = await page.evaluate(() => window.__e2e.locations[window.__e2e.locations.length - 1]);
    const dropAt = await page.evaluate(() => performance.now());
    const r = await fetch(new URL(loc, BASE), { method: 'DELETE', headers: { Authorization: `Bearer ${KEY}` } });
    summary.server_drop = { location: loc, status: r.status, at: Math.round(dropAt) };
    try {
      await page.waitForFunction((t) => window.__e2e.marks.some((m) => m.t > t && m.what === 'event' && m.value === 'session.created'),
        dropAt, { timeout: 15000, polling: 100 });
    } catch (e) { summary.errors.push(`waiting for the reconnect: ${e.message.split('\n')[0]}`); }
    summary.after_reconnect = await page.evaluate(readPage);
  }

  // Disconnect (keyboard again); a deliberate hang-up must not show an error.
  await page.focus('#disconnect');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('status').dataset.phase === 'idle', null, { timeout: 5000 }).catch(() => {});
  await page.waitForTimeout(1000);  // let a late "User-Initiated Abort" surface if the page were to show it
  summary.after_disconnect = await page.evaluate(readPage);

  // An agent this server has not configured: the page says so and does not retry.
  await page.selectOption('#agent', 'openai-realtime');
  await page.click('#connect');
  await page.waitForFunction(() => document.getElementById('status').dataset.phase === 'error', null, { timeout: 10000 })
    .catch((e) => summary.errors.push(`waiting for the agent error: ${e.message.split('\n')[0]}`));
  summary.unconfigured_agent = await page.evaluate(readPage);

  // Microphone permission denied: a second browser without the flag that auto-accepts the
  // permission prompt (headless Chromium then denies it).
  const denyArgs = args.filter((a) => a !== '--use-fake-ui-for-media-stream');
  const denying = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: denyArgs, timeout: 45000 });
  try {
    const p2 = await (await denying.newContext({ viewport: PHONE })).newPage();
    await p2.goto(`${BASE}/`);
    await p2.click('#connect');
    await p2.waitForFunction(() => document.getElementById('status').dataset.phase === 'error', null, { timeout: 10000 })
      .catch((e) => summary.errors.push(`waiting for the mic-denied error: ${e.message.split('\n')[0]}`));
    summary.mic_denied = await p2.evaluate(readPage);
  } finally { await denying.close().catch(() => {}); }

  const rec = await page.evaluate(() => ({ marks: window.__e2e.marks, energy: window.__e2e.energy, micMax: window.__e2e.micMax,
    pcs: window.__e2e.pcs.length }));
  const first = (what, value) => rec.marks.find((m) => m.what === what && (value === undefined || m.value === value));
  summary.marks = rec.marks.map((m) => ({ t: Math.round(m.t), what: m.what, value: m.value ?? null }));
  summary.event_types = [...new Set(rec.marks.filter((m) => m.what === 'event').map((m) => m.value))];
  summary.turn_states = rec.marks.filter((m) => m.what === 'turn').map((m) => m.value);
  summary.agent_speaking = rec.marks.filter((m) => m.what === 'speaking').map((m) => m.value);
  summary.mic_meter_max = rec.micMax;
  summary.peer_connections = rec.pcs;
  summary.phases = rec.marks.filter((m) => m.what === 'phase').map((m) => m.value);

  // getStats() of the first call: inbound audio energy from the agent, before and after the echo.
  const E = rec.energy.filter((s) => s.pc === 0);
  const stopped = first('turn', 'stopped'), created = first('event', 'response.created');
  const energyAt = (t) => { let e = 0; for (const s of E) if (s.t <= t) e = s.energy; return e; };
  const startE = stopped ? energyAt(stopped.t) : null;
  const heard = stopped ? E.find((s) => s.t > stopped.t && s.energy - startE > 1e-6) : null;
  summary.getstats = {
    samples: E.length,
    total_audio_energy_end: E.length ? E[E.length - 1].energy : null,
    total_audio_energy_at_speech_stopped: startE,
    total_audio_energy_at_response_created: created ? energyAt(created.t) : null,
    audio_level_max: E.reduce((m, s) => Math.max(m, s.level), 0),
    packets_received: E.length ? E[E.length - 1].packets : null,
  };
  const submit = first('submit'), session = first('event', 'session.created');
  summary.timing_ms = {
    click_to_session_created: submit && session ? Math.round(session.t - submit.t) : null,
    speech_stopped_to_first_agent_audio: heard ? Math.round(heard.t - stopped.t) : null,
    server_drop_to_session_created: summary.server_drop ? (() => {
      const again = rec.marks.find((m) => m.t > summary.server_drop.at && m.what === 'event' && m.value === 'session.created');
      return again ? Math.round(again.t - summary.server_drop.at) : null;
    })() : null,
    speech_stopped_to_speaking_indicator: stopped && first('speaking', 'true') ? Math.round(first('speaking', 'true').t - stopped.t) : null,
  };
  summary.completed = true;
} catch (e) {
  summary.errors.push(String((e && e.stack) || e));
}
if (browser) await browser.close().catch(() => {});
browser = null;
finish(summary.completed ? 0 : 1);

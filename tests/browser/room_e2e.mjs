// Room mode of the embedded web page (GET /) in a real headless Chromium: two (or more)
// participants join one room through the page's UI and must hear each other.
//
// Run by tests/browser_page.rs against a server it started on 127.0.0.1; runnable by hand too:
//   VOXRELAY_URL=http://127.0.0.1:8080 node tests/browser/room_e2e.mjs
// One Chromium, one browser context per participant (separate profiles, as separate people),
// each with the fake microphone playing tests/fixtures/speech.wav framed as 0.5 s silence +
// speech + 1.5 s silence (Chromium loops it). The pages run unmodified; an init script records
// the room events on the page's `room-events` channel, the page's DOM changes (participants,
// speaking and muted marks, chat, status) and samples getStats() of every slot receiver
// (inbound-rtp per transceiver mid) every 200 ms. Steps: join all (keyboard), wait until every
// page has received audio from every other participant on the slot the page maps to them and
// saw each of them marked speaking; chat both ways; mute and unmute; leave (Leave button).
// Nothing is asserted here: the JSON summary on stdout is what the Rust test asserts on.
//
// Env:
//   VOXRELAY_URL     server base URL (default http://127.0.0.1:8080)
//   E2E_ROOM         room name (default e2e-<random>)
//   E2E_PAGES        participants (default 2; 3 tries three tabs)
//   E2E_SCREENSHOT   where to save a screenshot of the first page in the room (default: none)
//   CHROMIUM         browser binary (default /usr/bin/chromium; never downloaded)
//   E2E_TIMEOUT_MS   overall budget (default 60000); the browser is killed when it runs out
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
const ROOM = process.env.E2E_ROOM || `e2e-${Math.random().toString(36).slice(2, 8)}`;
const NAMES = ['Alice', 'Bob', 'Carol Ng', 'Dan'].slice(0, Math.max(2, Math.min(4, Number(process.env.E2E_PAGES || 2))));
const SPEECH = [0.5, 'speech', 1.5];
const HEARD_PACKETS = 100;  // waited for: this many packets (2 s of Opus) and some audio energy on the slot

const summary = { completed: false, server: BASE, room: ROOM, chromium: null, errors: [], pages: [] };
let browser = null;
const t0 = Date.now();
const tmp = mkdtempSync(join(tmpdir(), 'voxrelay-room-e2e-'));

function finish(code) {
  summary.elapsed_ms = Date.now() - t0;
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
  const E = (window.__e2e = { pcs: [], events: [], marks: [], slots: {} });
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); E.pcs.push(this); }
    createDataChannel(...args) {
      const dc = super.createDataChannel(...args);
      dc.addEventListener('message', (m) => { try { E.events.push({ t: performance.now(), ev: JSON.parse(m.data) }); } catch {} });
      return dc;
    }
  };
  const mark = (what, value, who) => E.marks.push({ t: performance.now(), what, value, who });
  document.addEventListener('submit', (e) => mark('submit', e.target.id), true);
  document.addEventListener('DOMContentLoaded', () => {
    const $ = (id) => document.getElementById(id);
    new MutationObserver((ms) => ms.forEach((m) => mark(m.attributeName.slice(5), m.target.getAttribute(m.attributeName), m.target.dataset.identity)))
      .observe($('room-people'), { subtree: true, attributes: true, attributeFilter: ['data-speaking', 'data-muted'] });
    new MutationObserver(() => mark('phase', $('status').dataset.phase)).observe($('status'), { attributes: true, attributeFilter: ['data-phase'] });
    new MutationObserver(() => mark('error', $('error').hidden ? null : $('error').textContent))
      .observe($('error'), { attributes: true, childList: true, characterData: true, subtree: true });
    new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => mark('chat', n.textContent)))).observe($('chat'), { childList: true });
    setInterval(async () => {
      const pc = E.pcs[E.pcs.length - 1];
      if (!pc || pc.connectionState === 'closed') return;
      for (const t of pc.getTransceivers()) {
        if (!t.mid) continue;
        (await t.receiver.getStats()).forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          const old = E.slots[t.mid] || { level_max: 0, first_packet_t: null };
          E.slots[t.mid] = { packets: s.packetsReceived || 0, bytes: s.bytesReceived || 0, energy: s.totalAudioEnergy || 0,
            level: s.audioLevel || 0, level_max: Math.max(old.level_max, s.audioLevel || 0), lost: s.packetsLost || 0,
            first_packet_t: old.first_packet_t ?? (s.packetsReceived ? performance.now() : null) };
        });
      }
    }, 200);
  });
}

// Page-side predicates and readers (run in the page).
function me() { const li = document.querySelector('#room-people li[data-you]'); return li ? li.dataset.identity : null; }
function readPage(heardPackets) {
  const $ = (id) => document.getElementById(id);
  const E = window.__e2e;
  const you = document.querySelector('#room-people li[data-you]');
  const slots = [...$('room-audio').querySelectorAll('audio')].map((a) => ({ mid: a.dataset.mid, identity: a.dataset.identity || null,
    playing: !!a.srcObject && !a.paused, ...(E.slots[a.dataset.mid] || {}) }));
  const heard = {};
  for (const s of slots) if (s.identity && s.packets > heardPackets && s.energy > 0) heard[s.identity] = true;
  const pc = E.pcs[E.pcs.length - 1];
  const sender = pc && pc.getSenders()[0];
  return {
    identity: you ? you.dataset.identity : null,
    status: { phase: $('status').dataset.phase, text: $('status').textContent },
    error: $('error').hidden ? null : $('error').textContent,
    people: [...$('room-people').children].map((li) => ({ identity: li.dataset.identity, name: li.querySelector('.who').textContent,
      speaking: li.dataset.speaking === 'true', muted: li.dataset.muted === 'true', you: li.dataset.you === 'true' })),
    slots, heard: Object.keys(heard),
    chat: [...$('chat').children].map((li) => li.textContent),
    mic_enabled: sender && sender.track ? sender.track.enabled : null,
    mute_button: { pressed: $('room-mute').getAttribute('aria-pressed'), text: $('room-mute').textContent },
    horizontal_overflow_px: document.documentElement.scrollWidth - window.innerWidth,
  };
}

const short = (e) => e.message.split('\n')[0];

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

  const pages = [];
  for (const name of NAMES) {
    const context = await browser.newContext({ viewport: { width: 900, height: 1000 } });
    const page = await context.newPage();
    const p = { name, page, errors: [] };
    page.on('pageerror', (e) => p.errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') (p.console ||= []).push(`${m.type()}: ${m.text()}`); });
    await page.addInitScript(observe);
    await page.goto(`${BASE}/`);
    await page.waitForFunction(() => document.getElementById('status').dataset.phase === 'idle');
    pages.push(p);
  }

  // Join, one after the other, with the keyboard: the room name, the name, Enter.
  for (const p of pages) {
    await p.page.fill('#room-name', ROOM);
    await p.page.fill('#room-user', p.name);
    await p.page.focus('#room-user');
    await p.page.keyboard.press('Enter');
    try {
      await p.page.waitForFunction(() => document.getElementById('status').dataset.phase === 'connected', null, { timeout: 15000, polling: 100 });
    } catch (e) { summary.errors.push(`${p.name}: waiting to be in the room: ${short(e)}`); }
    p.identity = await p.page.evaluate(me);
  }
  const ids = pages.map((p) => p.identity);
  summary.identities = ids;
  console.error(`room_e2e: ${NAMES.join(', ')} in room ${ROOM} as ${ids.join(', ')}`);

  // Everyone lists everyone, and has heard every other participant on the slot mapped to them.
  const heardAll = ({ others, n }) => {
    const people = new Set([...document.querySelectorAll('#room-people li')].map((li) => li.dataset.identity));
    const slots = [...document.querySelectorAll('#room-audio audio')];
    return others.every((id) => people.has(id) && slots.some((a) => {
      const s = window.__e2e.slots[a.dataset.mid];
      return a.dataset.identity === id && s && s.packets > n && s.energy > 0;
    }));
  };
  const spokeAll = (others) => others.every((id) => window.__e2e.marks.some((m) => m.what === 'speaking' && m.value === 'true' && m.who === id));
  for (const p of pages) {
    const others = ids.filter((id) => id !== p.identity);
    try {
      await p.page.waitForFunction(heardAll, { others, n: HEARD_PACKETS }, { timeout: 20000, polling: 100 });
    } catch (e) { summary.errors.push(`${p.name}: waiting to hear ${others.join(', ')}: ${short(e)}`); }
    try {
      await p.page.waitForFunction(spokeAll, others, { timeout: 10000, polling: 100 });
    } catch (e) { summary.errors.push(`${p.name}: waiting for ${others.join(', ')} marked speaking: ${short(e)}`); }
  }
  for (const p of pages) p.in_room = await p.page.evaluate(readPage, HEARD_PACKETS);
  if (SHOT) {
    mkdirSync(dirname(SHOT), { recursive: true });
    await pages[0].page.screenshot({ path: SHOT, fullPage: true });
    summary.screenshot = SHOT;
  }

  // Chat: the first page writes, everyone else reads it; the second answers.
  const [a, b] = pages;
  const say = async (p, text) => {
    await p.page.fill('#chat-text', text);
    await p.page.focus('#chat-text');
    await p.page.keyboard.press('Enter');
    for (const q of pages.filter((q) => q !== p)) {
      await q.page.waitForFunction((t) => [...document.querySelectorAll('#chat li')].some((li) => li.textContent.endsWith(t)), text, { timeout: 5000 })
        .catch((e) => summary.errors.push(`${q.name}: waiting for the chat message ${JSON.stringify(text)}: ${short(e)}`));
    }
  };
  summary.chat_sent = [`hello from ${a.name} ✓ <b>not bold</b>`, `hi ${a.name}, ${b.name} here`];
  await say(a, summary.chat_sent[0]);
  await say(b, summary.chat_sent[1]);

  // Mute and unmute the first page: the others see it; its microphone track is disabled.
  const mutedOn = (q, id, v) => q.page.waitForFunction(([id, v]) => {
    const li = document.querySelector(`#room-people li[data-identity="${CSS.escape(id)}"]`);
    return li && li.dataset.muted === v;
  }, [id, v], { timeout: 5000 }).catch((e) => summary.errors.push(`${q.name}: waiting for ${id} muted=${v}: ${short(e)}`));
  await a.page.click('#room-mute');
  for (const q of pages) await mutedOn(q, a.identity, 'true');
  summary.while_muted = { self: await a.page.evaluate(readPage, HEARD_PACKETS), other: await b.page.evaluate(readPage, HEARD_PACKETS) };
  await a.page.click('#room-mute');
  for (const q of pages) await mutedOn(q, a.identity, 'false');
  summary.after_unmute = { self: await a.page.evaluate(readPage, HEARD_PACKETS) };

  // Leave, the first page first: the others see it go; then everyone.
  for (const p of pages) {
    await p.page.click('#room-leave');
    await p.page.waitForFunction(() => document.getElementById('status').dataset.phase === 'idle', null, { timeout: 8000 })
      .catch((e) => summary.errors.push(`${p.name}: waiting to leave: ${short(e)}`));
    for (const q of pages.filter((q) => q !== p && q.left === undefined)) {
      await q.page.waitForFunction((id) => !document.querySelector(`#room-people li[data-identity="${CSS.escape(id)}"]`), p.identity, { timeout: 5000 })
        .catch((e) => summary.errors.push(`${q.name}: waiting for ${p.name} to be gone: ${short(e)}`));
    }
    p.left = await p.page.evaluate(readPage, HEARD_PACKETS);
  }
  await pages[0].page.waitForTimeout(500);  // a late error (a closing channel) would show by now

  for (const p of pages) {
    const rec = await p.page.evaluate(() => ({ events: window.__e2e.events, marks: window.__e2e.marks }));
    const first = (pred) => rec.marks.find(pred);
    const submit = first((m) => m.what === 'submit' && m.value === 'room-form');
    const joined = rec.events.find((e) => e.ev.type === 'room.joined');
    const slotsAtEnd = p.in_room ? p.in_room.slots : [];
    const firstAudio = slotsAtEnd.map((s) => s.first_packet_t).filter((t) => t != null).sort((x, y) => x - y)[0];
    p.errors.push(...rec.marks.filter((m) => m.what === 'error' && m.value).map((m) => `shown: ${m.value}`));
    summary.pages.push({
      name: p.name,
      identity: p.identity,
      errors: p.errors,
      console: p.console || [],
      in_room: p.in_room,
      left: p.left,
      event_types: [...new Set(rec.events.map((e) => e.ev.type))],
      room_joined: joined ? joined.ev : null,
      slot_assigned: rec.events.filter((e) => e.ev.type === 'slot.assigned').map((e) => e.ev),
      participant_left: rec.events.filter((e) => e.ev.type === 'participant.left').map((e) => e.ev),
      chat_received: rec.events.filter((e) => e.ev.type === 'data.received').map((e) => e.ev),
      speaking_marked: [...new Set(rec.marks.filter((m) => m.what === 'speaking' && m.value === 'true').map((m) => m.who))],
      muted_marks: rec.marks.filter((m) => m.what === 'muted').map((m) => `${m.who}=${m.value}`),
      phases: rec.marks.filter((m) => m.what === 'phase').map((m) => m.value),
      timing_ms: {
        join_to_room_joined: submit && joined ? Math.round(joined.t - submit.t) : null,
        join_to_first_slot_packet: submit && firstAudio ? Math.round(firstAudio - submit.t) : null,
      },
    });
  }
  summary.completed = true;
} catch (e) {
  summary.errors.push(String((e && e.stack) || e));
}
if (browser) await browser.close().catch(() => {});
browser = null;
finish(summary.completed ? 0 : 1);

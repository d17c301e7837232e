// The official `openai` npm SDK, unmodified, against a running voxrelay (tests/sdk_interop.rs).
//
// The npm SDK always opens its Realtime WebSocket as wss:// (it rewrites the scheme of baseURL),
// so the test reaches voxrelay through a TLS-terminating proxy, as a deployment would; the
// proxy's self-signed certificate is trusted through NODE_EXTRA_CA_CERTS. Steps:
// clientSecrets.create, OpenAIRealtimeWS with the client secret (a spoken turn from the WAV
// answered with audio deltas, then a text turn answered with text), calls.hangup of a live call.
// Every check throws; the last stdout line is a JSON summary.
//
// Usage: node interop.mjs BASE_URL API_KEY WAV CALL_ID

import fs from 'node:fs';
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';

const TIMEOUT_MS = 30_000;
const [base, apiKey, wavPath, callId] = process.argv.slice(2);

function check(cond, what) {
  if (!cond) throw new Error(what);
}

/** The WAV's samples (48 kHz mono s16, a plain 44-byte header) at 24 kHz: pairs averaged. */
function speech24k(path) {
  const wav = fs.readFileSync(path);
  check(wav.toString('ascii', 0, 4) === 'RIFF' && wav.readUInt32LE(24) === 48000, 'the fixture is a 48 kHz WAV');
  let offset = 12;
  while (wav.toString('ascii', offset, offset + 4) !== 'data') offset += 8 + wav.readUInt32LE(offset + 4);
  const samples = new Int16Array(wav.buffer.slice(wav.byteOffset + offset + 8, wav.byteOffset + offset + 8 + wav.readUInt32LE(offset + 4)));
  const out = new Int16Array(samples.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = (samples[2 * i] + samples[2 * i + 1]) >> 1;
  return out;
}

const rms = (s) => Math.sqrt(s.reduce((a, x) => a + x * x, 0) / Math.max(1, s.length));

/** Resolves with the next event of `type` (all events are logged in `seen`). */
function next(rt, type, seen) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} within ${TIMEOUT_MS} ms; seen ${seen.map((e) => e.type)}`)), TIMEOUT_MS);
    const on = (event) => {
      if (event.type === type) {
        clearTimeout(timer);
        rt.off('event', on);
        resolve(event);
      }
    };
    rt.on('event', on);
  });
}

const server = new OpenAI({ apiKey, baseURL: `${base}/v1` });
const secret = await server.realtime.clientSecrets.create({
  session: { type: 'realtime', model: 'gpt-realtime', audio: { input: { turn_detection: { type: 'server_vad', silence_duration_ms: 500 } } } },
});
check(secret.value.startsWith('ek_'), `client secret ${secret.value}`);
check(JSON.stringify(secret.session.output_modalities) === '["audio"]', `output_modalities ${secret.session.output_modalities}`);

const user = new OpenAI({ apiKey: secret.value, baseURL: `${base}/v1` });
const rt = await OpenAIRealtimeWS.create(user, { model: 'gpt-realtime' });
const seen = [];
rt.on('event', (e) => seen.push(e));
rt.on('error', (e) => {
  console.error('realtime error', e);
  process.exit(1);
});
await next(rt, 'session.created', seen);
rt.send({ type: 'session.update', session: { type: 'realtime', audio: { input: { format: { type: 'audio/pcm', rate: 24000 } } } } });
await next(rt, 'session.updated', seen);

const speech = speech24k(wavPath);
const audio = new Int16Array(7200 + speech.length + 36000);
audio.set(speech, 7200);
const bytes = Buffer.from(audio.buffer);
const done = next(rt, 'response.done', seen);
for (let i = 0; i < bytes.length; i += 4800) {
  rt.send({ type: 'input_audio_buffer.append', audio: bytes.subarray(i, i + 4800).toString('base64') });
}
const response = await done;
check(response.response.status === 'completed', `response ${response.response.status}`);
const deltas = seen.filter((e) => e.type === 'response.output_audio.delta').map((e) => Buffer.from(e.delta, 'base64'));
const echoed = new Int16Array(Buffer.concat(deltas).buffer.slice(0));
const [speechMs, echoedMs] = [speech.length / 24, echoed.length / 24];
check(Math.abs(echoedMs - speechMs) < 600, `echoed ${echoedMs} ms of a ${speechMs} ms turn`);
check(rms(echoed) > 0.3 * rms(speech), `echo level ${rms(echoed)} vs ${rms(speech)}`);

const before = seen.length;
const textDone = next(rt, 'response.done', seen);
rt.send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hello from node' }] } });
rt.send({ type: 'response.create', response: { output_modalities: ['text'] } });
await textDone;
const text = seen.slice(before).filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
check(text === 'hello from node', `text answer ${JSON.stringify(text)}`);
rt.close();

// calls.hangup of the WebRTC call the test started.
await server.realtime.calls.hangup(callId);
console.log(JSON.stringify({ ws_deltas: deltas.length, ws_echoed_ms: Math.round(echoedMs), ws_speech_ms: Math.round(speechMs), text, hung_up: callId }));

"""The official `openai` Python SDK, unmodified, against a running voxrelay (tests/sdk_interop.rs).

Each step is what an app ported from OpenAI's Realtime API does, with only the base URLs changed:
client_secrets.create, realtime.connect over ws:// with the client secret (a spoken turn from
the WAV answered with audio deltas, then a text turn answered with text), calls.create (the
SDK's multipart form) for an aiortc WebRTC peer whose turn is answered on its track, and
calls.hangup. Every check raises on failure; the last stdout line is a JSON summary.

Usage: interop.py BASE_URL API_KEY WAV
"""

import array
import asyncio
import base64
import json
import math
import sys
import time
import wave

from openai import AsyncOpenAI, OpenAI

TIMEOUT_S = 30


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def speech_24k(path):
    """The WAV (48 kHz mono s16) at 24 kHz: pairs averaged, a plain 2:1 decimation."""
    with wave.open(path) as w:
        check(w.getframerate() == 48000 and w.getnchannels() == 1 and w.getsampwidth() == 2, "the fixture is 48 kHz mono s16")
        pcm = array.array("h", w.readframes(w.getnframes()))
    return array.array("h", ((pcm[i] + pcm[i + 1]) // 2 for i in range(0, len(pcm) - 1, 2)))


def rms(samples):
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def events_until(conn, kind, seen):
    """Receives events until one of type `kind`. The SDK builds its event models leniently;
    each event is validated again, strictly, against the SDK's own pydantic model of its type."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        event = conn.recv()
        if event.type != "session.created":  # beta-shaped until the GA session.update (README)
            type(event).model_validate(event.to_dict())
        seen.append(event)
        if event.type == "error":
            raise AssertionError(f"error event: {event.error}")
        if event.type == kind:
            return event
    raise AssertionError(f"no {kind} within {TIMEOUT_S} s; seen {[e.type for e in seen]}")


def realtime_socket(base, api_key, wav):
    server = OpenAI(api_key=api_key, base_url=f"{base}/v1", websocket_base_url=base.replace("http", "ws", 1) + "/v1")
    secret = server.realtime.client_secrets.create(
        session={"type": "realtime", "model": "gpt-realtime", "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}},
    )
    check(secret.value.startswith("ek_"), f"client secret {secret.value!r}")
    check(secret.session.output_modalities == ["audio"], f"GA output_modalities {secret.session.output_modalities}")

    # What a browser or a server-side app does with the secret.
    user = OpenAI(api_key=secret.value, base_url=f"{base}/v1", websocket_base_url=base.replace("http", "ws", 1) + "/v1")
    seen = []
    with user.realtime.connect(model="gpt-realtime") as conn:
        events_until(conn, "session.created", seen)
        conn.session.update(session={"type": "realtime", "output_modalities": ["audio"], "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}})
        updated = events_until(conn, "session.updated", seen)
        check(updated.session.audio.input.turn_detection.type == "server_vad", "the secret's turn detection")

        speech = speech_24k(wav)
        audio = array.array("h", [0] * 7200) + speech + array.array("h", [0] * 36000)
        data = audio.tobytes()
        for i in range(0, len(data), 4800):  # 100 ms chunks, sent at once: the server paces
            conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + 4800]).decode())
        events_until(conn, "input_audio_buffer.speech_started", seen)
        events_until(conn, "input_audio_buffer.committed", seen)
        event = events_until(conn, "response.done", seen)
        deltas = [base64.b64decode(e.delta) for e in seen if e.type == "response.output_audio.delta"]
        check(event.response.status == "completed", f"response status {event.response.status}")
        echoed = array.array("h", b"".join(deltas))
        speech_ms = len(speech) / 24
        echoed_ms = len(echoed) / 24
        check(abs(echoed_ms - speech_ms) < 600, f"echoed {echoed_ms:.0f} ms of a {speech_ms:.0f} ms turn")
        check(rms(echoed) > 0.3 * rms(speech), f"echo level {rms(echoed):.0f} vs speech {rms(speech):.0f}")
        check(any(e.type == "response.output_audio.done" for e in seen), "response.output_audio.done")

        # A text turn, answered with text only.
        conn.conversation.item.create(item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello from python"}]})
        conn.response.create(response={"output_modalities": ["text"]})
        before = len(seen)
        done = events_until(conn, "response.done", seen)
        text = "".join(e.delta for e in seen[before:] if e.type == "response.output_text.delta")
        check(text == "hello from python", f"text answer {text!r}")
        check(done.response.output[0].content[0].type in ("text", "output_text"), f"content {done.response.output[0].content[0].type}")
        check(not any("audio" in e.type for e in seen[before:]), "no audio events in a text-only response")
    return {"ws_deltas": len(deltas), "ws_echoed_ms": round(echoed_ms), "ws_speech_ms": round(speech_ms), "text": text}


async def webrtc_call(base, api_key, wav):
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    client = AsyncOpenAI(api_key=api_key, base_url=f"{base}/v1")
    pc = RTCPeerConnection()
    pc.addTrack(MediaPlayer(wav).audio)
    channel = pc.createDataChannel("oai-events")
    events = asyncio.Queue()
    channel.on("message", lambda m: events.put_nowait(json.loads(m)))
    voiced_frames = 0

    @pc.on("track")
    def on_track(track):
        async def drain():
            nonlocal voiced_frames
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                # Decoded s16 (no numpy needed to read it).
                samples = array.array("h", bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
                if rms(samples) > 500:
                    voiced_frames += 1

        asyncio.ensure_future(drain())

    await pc.setLocalDescription(await pc.createOffer())
    raw = await client.realtime.calls.with_raw_response.create(sdp=pc.localDescription.sdp, session={"type": "realtime", "instructions": "be brief"})
    check(raw.http_response.status_code == 201, f"calls.create status {raw.http_response.status_code}")
    call_id = raw.headers["location"].rsplit("/", 1)[-1]
    answer = raw.http_response.text
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    seen = []

    async def until(kind):
        while True:
            event = await asyncio.wait_for(events.get(), TIMEOUT_S)
            seen.append(event["type"])
            if event["type"] == kind:
                return event

    created = await until("session.created")
    check(created["session"]["instructions"] == "be brief", "the form's session applied")
    await until("input_audio_buffer.committed")
    done = await until("response.done")
    check(done["response"]["status"] == "completed", f"call response {done['response']['status']}")
    await asyncio.sleep(0.5)
    check(voiced_frames > 20, f"{voiced_frames} voiced frames of the echo on the track")
    await client.realtime.calls.hangup(call_id)
    await pc.close()
    return {"call_id": call_id, "call_voiced_frames": voiced_frames, "call_events": len(seen)}


def main():
    base, api_key, wav = sys.argv[1:4]
    summary = realtime_socket(base, api_key, wav)
    summary.update(asyncio.run(webrtc_call(base, api_key, wav)))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

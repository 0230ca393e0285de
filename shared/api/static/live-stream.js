// The native live protocol (`/ws/stream`) from the browser: PCM16 pieces out, events in, heartbeats,
// and resume after a dropped connection. Audio the server has not acknowledged stays here, so a
// reconnect (`session`, `last_event`, `offset`) resends it; events already seen (seq <= last) are skipped.
// The model is shared/live/client.py.

import { liveTicket } from "./api.js";

const HEARTBEAT_MS = 10_000;
const SILENT_MS = 15_000; // at least, and 3 server heartbeats: nothing heard for that long is a dead link
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
const RECONNECT_FOR_MS = 60_000; // the server keeps a dropped session this long (STREAM_RESUME_S)
const MAX_BUFFER_S = 120; // unacknowledged audio kept for a resend

export class LiveStream {
  // options: transcription options ({diarize, num_speakers, language, ...}); fatal: the error codes after
  // which the server closes the stream and a reconnect cannot help (/web/config's fatal_live_codes);
  // onEvent(event) gets every new engine event and every error; onState(state, detail) gets connecting,
  // live, reconnecting, ended or failed.
  constructor({ rate, options, fatal, onEvent, onState }) {
    this.rate = rate;
    this.fatal = new Set(fatal);
    this.options = options;
    this.onEvent = onEvent;
    this.onState = onState;
    this.sessionId = "";
    this.lastSeq = 0;
    this.acked = 0;
    this.sent = 0; // stream bytes produced so far
    this.pieces = []; // [{start, data}] not yet acknowledged
    this.ws = null;
    this.ready = false; // the current socket had its `session` event
    this.ending = null; // {resolve, reject} once end() was asked
    this.over = false;
    this.reconnects = 0;
    this.droppedAt = 0;
    this.attempt = 0;
    this.timer = null;
  }

  start() {
    this.connect();
  }

  url(ticket) {
    const query = new URLSearchParams({ format: "pcm16", rate: String(this.rate) });
    for (const [name, value] of Object.entries(this.options)) {
      if (value !== null && value !== undefined && value !== "") query.set(name, String(value));
    }
    if (this.sessionId) {
      query.set("session", this.sessionId);
      query.set("last_event", String(this.lastSeq));
      query.set("offset", String(this.pieces[0]?.start ?? this.sent));
    }
    query.set("ticket", ticket); // never the key itself: URLs are logged
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/stream?${query}`;
  }

  // Each connection, a resume's too, opens with a fresh ticket asked for just before it.
  async connect() {
    this.ready = false;
    this.onState(this.sessionId ? "reconnecting" : "connecting");
    let ticket;
    try {
      ticket = await liveTicket();
    } catch (err) {
      if (this.over) return;
      // refused (a missing or wrong key): say why; unreachable or busy while resuming: retry as for a drop
      if (!this.sessionId || err.status === 401 || err.status === 403) return this.fail(err.code, err.message, err.status);
      return this.closed({ code: 1006, reason: err.message });
    }
    if (this.over) return;
    const ws = new WebSocket(this.url(ticket));
    this.ws = ws;
    ws.onmessage = (e) => {
      this.heardAt = Date.now();
      this.receive(JSON.parse(e.data));
    };
    ws.onclose = (e) => {
      if (ws === this.ws) this.closed(e);
    };
  }

  // A piece of PCM16 from the microphone: kept until acknowledged, sent now if the socket is up.
  push(data) {
    const piece = { start: this.sent, data };
    this.sent += data.byteLength;
    this.pieces.push(piece);
    if (this.ready) this.ws.send(data);
    const kept = this.sent - (this.pieces[0]?.start ?? this.sent);
    if (kept > MAX_BUFFER_S * this.rate * 2) this.fail("buffer_full", "the connection stayed down too long: the unsent audio outgrew its buffer");
  }

  // After the last piece: ask for the last finals; resolves on `done`.
  end() {
    return new Promise((resolve, reject) => {
      this.ending = { resolve, reject };
      if (this.ready) this.ws.send(JSON.stringify({ type: "end" }));
    });
  }

  receive(event) {
    const kind = event.type;
    if (kind === "ack") {
      this.acked = Math.max(this.acked, event.bytes);
      while (this.pieces.length && this.pieces[0].start + this.pieces[0].data.byteLength <= this.acked) this.pieces.shift();
      return;
    }
    if (kind === "session") return this.opened(event);
    if (event.seq !== undefined) {
      if (event.seq <= this.lastSeq) return; // a replay after a resume
      this.lastSeq = event.seq;
    }
    if (kind === "heartbeat") return;
    if (kind === "error" && event.seq === undefined && this.fatal.has(event.code)) this.over = true;
    if (kind === "done") {
      this.over = true;
      this.ending?.resolve();
    }
    this.onEvent(event);
  }

  opened(event) {
    this.sessionId = event.session_id;
    this.ready = true;
    this.attempt = 0;
    this.droppedAt = 0;
    for (const piece of this.pieces) this.ws.send(piece.data); // the server skips what it already had
    if (this.ending) this.ws.send(JSON.stringify({ type: "end" }));
    clearInterval(this.timer);
    const silent = Math.max(SILENT_MS, 3000 * (event.heartbeat_s || 0));
    let beatAt = Date.now();
    this.timer = setInterval(() => {
      if (!this.ready) return;
      const now = Date.now();
      if (now - this.heardAt > silent) return this.lost();
      if (now - beatAt < HEARTBEAT_MS) return;
      beatAt = now;
      this.ws.send(JSON.stringify({ type: "heartbeat" }));
    }, 1000);
    this.onState("live", event);
  }

  // The server went quiet (a link that died without a close, which can take minutes to show): give up
  // on this socket without waiting for its closing handshake, and resume on a new one.
  lost() {
    const dead = this.ws;
    this.ws = null; // its close event, whenever it comes, is no longer ours
    dead.close(3001, "no answer from the server");
    this.closed({ code: 1006, reason: "no answer from the server" });
  }

  closed(e) {
    clearInterval(this.timer);
    this.ready = false;
    if (this.over) {
      this.onState(this.ending && e.code === 1000 ? "ended" : "failed");
      this.ending?.reject(new Error("the stream ended before its last finals"));
      return;
    }
    if (e.code >= 4000 && e.code < 5000) {
      // the server's own refusal (README's close codes): its error event said why
      return this.fail("closed", `the server closed the live stream (code ${e.code}${e.reason ? `: ${e.reason}` : ""})`);
    }
    if (!this.sessionId) {
      // never opened: a refused handshake (a missing or wrong key) or no server; nothing to resume
      return this.fail("connect_failed", `the live stream could not be opened (WebSocket closed with code ${e.code}${e.reason ? `: ${e.reason}` : ""}); check the API key and the server`);
    }
    const now = Date.now();
    if (!this.droppedAt) this.droppedAt = now;
    if (now - this.droppedAt > RECONNECT_FOR_MS) {
      return this.fail("connection_lost", "the connection to the server was lost and could not be resumed");
    }
    this.reconnects += 1;
    this.onState("reconnecting");
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    setTimeout(() => !this.over && this.connect(), delay);
  }

  fail(code, message, status = 0) {
    if (this.over) return;
    this.over = true;
    clearInterval(this.timer);
    this.onEvent({ type: "error", code, message, status });
    this.onState("failed");
    this.ending?.reject(new Error(message));
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close();
  }

  // Stop without a last word (the page is leaving, or live mode failed).
  abort() {
    this.over = true;
    clearInterval(this.timer);
    this.ws?.close();
  }

  // Tests: drop the connection as a network failure would, then resume.
  drop() {
    this.ws?.close(3000, "dropped for a test");
  }
}

// Live mode: the microphone streamed to /ws/stream. Partial words show in grey on a pending line per
// utterance: the stable ones (never taken back) and after them, lighter and in italics, the newest decode's
// tentative words, which each partial replaces; the utterance's final replaces the line with a speaker line
// in the transcript view (colours and renaming as for a file). A speaker_update relabels earlier final
// lines. Stop sends the last audio and {"type": "end"}, and waits for `done`.

import { ApiError, getKey } from "./api.js";
import { LiveStream } from "./live-stream.js";
import { MicrophoneError, openMicrophone } from "./mic.js";
import { clock } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const END_WAIT_MS = 150_000; // the server gives the last finals up to 120 s

const STATUS = {
  connecting: "Connecting…",
  live: "Listening. Speak: partial words appear in grey, final lines in the speaker's colour.",
  reconnecting: "Connection lost: reconnecting and resuming…",
  stopping: "Stopping: waiting for the last lines…",
  ended: "Stopped.",
  failed: "Stopped (see the error above).",
};

export class LiveMode {
  constructor({ view, config, options, showError, clearError, onBusy }) {
    this.view = view;
    this.config = config;
    this.options = options; // () => the form's transcription options
    this.showError = showError;
    this.clearError = clearError;
    this.onBusy = onBusy;
    this.section = $("live-section");
    this.button = $("live-toggle");
    this.pendingList = $("live-pending");
    this.stream = null;
    this.mic = null;
    this.button.addEventListener("click", () => (this.stream ? this.stop() : this.start()));
    window.__whospokeLive = {
      dropForTest: () => this.stream?.drop(),
      stats: () => ({ ...this.stats, ...this.streamStats }),
      // Tests: draw these events as if a stream had sent them (no microphone, no server)
      replayForTest: (events) => {
        if (!this.pending) this.reset();
        for (const event of events) this.event(event);
      },
    };
  }

  state(name) {
    this.section.dataset.state = name;
    $("live-status").textContent = STATUS[name] || "";
    const running = ["connecting", "live", "reconnecting", "stopping"].includes(name);
    this.button.textContent = running ? "Stop" : "Start live";
    this.button.setAttribute("aria-pressed", String(running));
    this.button.disabled = name === "stopping" || this.starting;
  }

  reset() {
    this.pending = new Map(); // utterance -> its grey line
    this.finals = new Set(); // utterances already shown as final lines
    this.stats = { partials: 0, tentative: 0, finals: 0, speakerUpdates: 0, lags: [] };
    this.pendingList.replaceChildren();
    this.view.clear();
    this.view.player.removeAttribute("src");
    this.view.player.hidden = true;
    $("downloads-panel").hidden = true;
    $("result-summary").textContent = "Live from the microphone.";
    $("result-section").hidden = false;
  }

  async start() {
    this.clearError();
    if (this.config.api_keys_required && !getKey()) {
      // a refused WebSocket handshake tells the page nothing, so say it before trying
      this.showError(new ApiError("this server needs an API key for live mode: enter it above, then start again",
        { status: 401, code: "unauthorized" }));
      return;
    }
    this.starting = true;
    this.state("connecting");
    let mic;
    try {
      mic = await openMicrophone();
    } catch (err) {
      this.starting = false;
      this.state("failed");
      this.showError(err instanceof MicrophoneError ? err : new MicrophoneError(err.message, "microphone_error"));
      return;
    }
    this.starting = false;
    this.reset();
    this.onBusy(true);
    this.mic = mic;
    this.stream = new LiveStream({
      rate: mic.rate,
      options: this.options(),
      fatal: this.config.fatal_live_codes,
      onEvent: (event) => this.event(event),
      onState: (name) => this.changed(name),
    });
    this.stream.start();
    await mic.start((piece) => this.stream?.push(piece));
  }

  changed(name) {
    if (this.stopping && name !== "ended" && name !== "failed") return;
    this.state(name);
    if (name === "failed") this.finish();
  }

  async stop() {
    const { stream, mic } = this;
    if (!stream || this.stopping) return;
    this.stopping = true;
    this.state("stopping");
    try {
      await mic.stop(); // the last piece reaches the stream before the end
      let timer;
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("the server did not finish the stream in time")), END_WAIT_MS);
      });
      await Promise.race([stream.end(), late]).finally(() => clearTimeout(timer));
      this.state("ended");
    } catch (err) {
      if (this.section.dataset.state !== "failed") this.showError(err);
      stream.abort();
      this.state("failed");
    }
    this.finish();
  }

  // what the stream did, kept after it ends (tests and the README's numbers read it)
  get streamStats() {
    const s = this.stream || this.lastStream;
    return s ? { reconnects: s.reconnects, sessionId: s.sessionId, sent: s.sent, acked: s.acked } : {};
  }

  finish() {
    this.lastStream = this.stream || this.lastStream;
    this.mic?.stop().catch(() => {}); // after a failure the microphone is still open
    this.mic = null;
    this.stream = null;
    this.stopping = false;
    for (const line of this.pending.values()) line.remove();
    this.pending.clear();
    this.onBusy(false);
  }

  event(event) {
    switch (event.type) {
      case "speech_started":
        this.pendingLine(event.utterance, event.start);
        break;
      case "partial":
        this.partial(event);
        break;
      case "final":
        this.final(event);
        break;
      case "speaker_update":
        this.speakerUpdate(event);
        break;
      case "error": // an HTTP status: the ticket was refused (a 401 opens the key field)
        this.showError(event.status ? new ApiError(event.message, event) : { message: event.message, code: event.code });
        break;
      default: // speech_stopped, speaker, done: nothing to draw
    }
  }

  pendingLine(utterance, start) {
    let line = this.pending.get(utterance);
    if (line || this.finals.has(utterance)) return line;
    line = document.createElement("li");
    line.className = "line pending";
    line.dataset.utterance = String(utterance);
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = clock(start ?? 0);
    const text = document.createElement("span");
    text.className = "text";
    const stable = document.createElement("span");
    stable.className = "stable";
    const tentative = document.createElement("span");
    tentative.className = "tentative";
    text.append(stable, tentative);
    line.append(time, text);
    this.pending.set(utterance, line);
    this.pendingList.append(line);
    return line;
  }

  // stable words are added; the tentative ones replace the line's previous tentative words
  partial(event) {
    const line = this.pendingLine(event.utterance, (event.words?.[0] ?? event.tentative_words?.[0])?.start);
    if (!line) return;
    const stable = line.querySelector(".stable");
    const tentative = line.querySelector(".tentative");
    stable.textContent = (stable.textContent + event.text).replace(/^\s+/, "");
    const tail = event.tentative || "";
    tentative.textContent = stable.textContent ? tail : tail.replace(/^\s+/, "");
    this.stats.partials += 1;
    if (tail.trim()) this.stats.tentative += 1;
    this.section.dataset.partials = String(this.stats.partials);
  }

  // earlier finals were given the wrong speaker: relabel their lines
  speakerUpdate(event) {
    const utterances = new Set(event.utterances.map(String));
    const indexes = [];
    this.view.lines.forEach((line, index) => utterances.has(line.dataset.utterance) && indexes.push(index));
    const { speaker, speaker_id, speaker_confidence } = event;
    this.view.relabel(indexes, { speaker, speaker_id, speaker_confidence });
    this.stats.speakerUpdates += 1;
  }

  final(event) {
    this.pending.get(event.utterance)?.remove();
    this.pending.delete(event.utterance);
    if (this.finals.has(event.utterance)) return;
    this.finals.add(event.utterance);
    // how far the audio sent had moved past the utterance's end when its final line arrived
    if (this.stream && !this.stopping) this.stats.lags.push(this.stream.sent / 2 / this.stream.rate - event.end);
    if (!event.text.trim()) return;
    const { start, end, speaker, speaker_id, speaker_confidence, text } = event; // named: a remembered voice
    this.view.append([{ start, end, speaker, speaker_id, speaker_confidence, text }]);
    this.view.lines.at(-1).dataset.utterance = String(event.utterance);
    this.stats.finals += 1;
    this.section.dataset.finals = String(this.stats.finals);
  }
}

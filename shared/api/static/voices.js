// Named speakers: the voices this key asked the server to remember (list, rename, delete), the
// "Name known voices" option (identify=true), and remembering a transcript's speaker from that
// speaker's own lines in the transcript's stored clip.

import { getJSON, request } from "./api.js";

const $ = (id) => document.getElementById(id);

export const SAMPLE_S = 60; // the speech one enrolment sends (the API takes up to 120 s)
export const MAX_SAMPLES = 20; // spans one enrolment sends (the API's limit)
const SHORTEST_S = 0.5; // shorter lines are mostly a word or two: more noise than voice

const ms = (t) => Math.round(t * 1000) / 1000;

// The speaker's longest lines, up to SAMPLE_S seconds together (at most MAX_SAMPLES), in time order.
export function pickSpans(segments, label) {
  const mine = segments
    .filter((s) => s.speaker === label && s.end - s.start >= SHORTEST_S)
    .sort((a, b) => b.end - b.start - (a.end - a.start));
  const spans = [];
  let total = 0;
  for (const s of mine) {
    if (spans.length >= MAX_SAMPLES || total >= SAMPLE_S - SHORTEST_S) break;
    const end = Math.min(s.end, s.start + SAMPLE_S - total);
    spans.push({ start: ms(s.start), end: ms(end) });
    total += end - s.start;
  }
  return spans.sort((a, b) => a.start - b.start);
}

// POST /api/voices from spans of one stored clip: the new voice, or the API's error.
export function enrol(name, clipId, spans) {
  const form = new FormData();
  form.append("name", name);
  form.append("samples", JSON.stringify(spans.map((s) => ({ clip_id: clipId, ...s }))));
  return getJSON("/api/voices", { method: "POST", body: form });
}

export class VoicesPanel {
  // canAsk(): whether asking the server makes sense yet (a server with keys and no key set: not yet)
  constructor({ showError, clearError, canAsk }) {
    this.showError = showError;
    this.clearError = clearError;
    this.canAsk = canAsk;
    this.voices = [];
    this.list = $("voice-list");
    this.status = $("voices-status");
    this.identify = $("identify");
    this.diarize = $("diarize");
    this.chosen = false; // the user set the checkbox: it no longer follows whether voices exist
    this.identify.addEventListener("change", () => (this.chosen = true));
    this.diarize.addEventListener("change", () => this.sync());
    this.sync();
  }

  // identify=true for a transcript or a live session, or "" (not sent) when it is off
  option() {
    return this.identify.checked && !this.identify.disabled ? "true" : "";
  }

  sync() {
    const any = this.voices.length > 0;
    if (!this.chosen) this.identify.checked = any;
    this.identify.disabled = !any || !this.diarize.checked;
    $("identify-hint").textContent = any
      ? `${this.voices.length} voice${this.voices.length > 1 ? "s" : ""} remembered`
      : "no voices remembered yet";
  }

  async refresh() {
    if (!this.canAsk()) {
      this.render([]);
      this.status.textContent = "Enter the API key above to see the voices remembered for it.";
      return;
    }
    try {
      this.render((await getJSON("/api/voices")).voices);
    } catch (err) {
      this.render([]);
      this.status.textContent = `Could not list the voices: ${err.message}`;
    }
  }

  render(voices) {
    this.voices = voices;
    this.status.textContent = voices.length
      ? ""
      : "No voices yet: remember one from a transcript's speaker list.";
    this.list.replaceChildren(...voices.map((voice, i) => this.item(voice, i)));
    this.list.hidden = !voices.length;
    $("voices-section").dataset.count = String(voices.length); // what a test waits on
    this.sync();
  }

  item(voice, i) {
    const item = document.createElement("li");
    item.className = "voice-item";
    item.dataset.voiceId = voice.voice_id;
    const name = document.createElement("span");
    name.className = "voice-name";
    name.textContent = voice.name;
    const about = document.createElement("span");
    about.className = "hint voice-about";
    about.textContent = `${Math.round(voice.speech_s)} s of speech`;

    const form = document.createElement("form");
    form.className = "row voice-rename";
    const id = `voice-name-${i}`;
    const caption = document.createElement("label");
    caption.htmlFor = id;
    caption.className = "visually-hidden";
    caption.textContent = `New name for ${voice.name}`;
    const input = document.createElement("input");
    input.id = id;
    input.type = "text";
    input.maxLength = 64;
    input.required = true;
    input.autocomplete = "off";
    input.value = voice.name;
    const rename = document.createElement("button");
    rename.type = "submit";
    rename.textContent = "Rename";
    rename.setAttribute("aria-label", `Rename ${voice.name}`);
    form.append(caption, input, rename);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.rename(voice, input.value.trim(), rename);
    });

    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "voice-delete";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${voice.name}`);
    remove.addEventListener("click", () => this.remove(voice, remove));
    item.append(name, about, form, remove);
    return item;
  }

  async rename(voice, name, button) {
    if (!name || name === voice.name) return;
    this.clearError();
    button.disabled = true;
    try {
      await request(`/api/voices/${voice.voice_id}`, { method: "PATCH", json: { name } });
      await this.refresh();
      this.status.textContent = `Renamed ${voice.name} to ${name}.`;
    } catch (err) {
      this.showError(err);
      button.disabled = false;
    }
  }

  async remove(voice, button) {
    if (!window.confirm(`Forget the voice "${voice.name}"? Transcripts made from now on will not name it.`)) return;
    this.clearError();
    button.disabled = true;
    try {
      await request(`/api/voices/${voice.voice_id}`, { method: "DELETE" });
      await this.refresh();
      this.status.textContent = `Deleted ${voice.name}.`;
    } catch (err) {
      this.showError(err);
      button.disabled = false;
    }
  }
}

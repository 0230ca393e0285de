// The transcript view: one line per segment, speakers coloured and renamable, times clickable, and
// an audio player kept in step (clicking a line seeks, the line being played is highlighted).
// It is fed segments, from a finished job (show) or piece by piece (append), whatever produced them.
// Speakers the server named from remembered voices carry their name as the label, the match's
// confidence as a tooltip; a finished file's other speakers can be remembered as a voice.

const PALETTE_SIZE = 8;

export function clock(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export class TranscriptView {
  constructor({ list, speakerList, speakersPanel, player }) {
    this.list = list;
    this.speakerList = speakerList;
    this.speakersPanel = speakersPanel;
    this.player = player;
    this.clear();
    player.addEventListener("timeupdate", () => this.follow());
    player.addEventListener("seeked", () => this.follow());
  }

  clear() {
    this.segments = [];
    this.lines = [];
    this.speakers = []; // labels in order of appearance
    this.names = new Map(); // label -> name the user gave
    this.known = new Map(); // label -> {id, confidence} of the remembered voice the server named it after
    this.remember = null; // (label, name) => Promise<voice>, when this transcript's speakers can be remembered
    this.current = -1;
    this.list.replaceChildren();
    this.speakerList.replaceChildren();
    this.speakersPanel.hidden = true;
  }

  // remember: (label, name) => Promise<voice> to remember a speaker's voice (a file's transcript)
  show(transcript, { remember = null } = {}) {
    this.clear();
    this.remember = remember;
    for (const s of transcript.segments) this.learn(s);
    for (const label of transcript.speakers || []) this.addSpeaker(label);
    this.append(transcript.segments);
  }

  append(segments) {
    for (const segment of segments) {
      this.learn(segment);
      if (segment.speaker) this.addSpeaker(segment.speaker);
      const index = this.segments.push(segment) - 1;
      const line = this.renderLine(segment, index);
      this.lines.push(line);
      this.list.append(line);
    }
  }

  // {label: name} for the speakers the user renamed (what the downloads are asked to apply)
  renamed() {
    const out = {};
    for (const [label, name] of this.names) if (name && name !== label) out[label] = name;
    return out;
  }

  // a speaker named after a remembered voice (segments carry its speaker_id and speaker_confidence)
  learn(segment) {
    if (segment.speaker && segment.speaker_id && !this.known.has(segment.speaker)) {
      this.known.set(segment.speaker, { id: segment.speaker_id, confidence: segment.speaker_confidence });
    }
  }

  knownNote(label) {
    const known = this.known.get(label);
    if (!known) return "";
    const confidence = typeof known.confidence === "number" ? `, confidence ${known.confidence.toFixed(2)}` : "";
    return `a remembered voice${confidence}`;
  }

  nameOf(label) {
    return this.names.get(label) || label;
  }

  colourOf(label) {
    return this.speakers.indexOf(label) % PALETTE_SIZE;
  }

  // the speaker panel's entry for a label
  speakerItem(label) {
    return [...this.speakerList.querySelectorAll("input[data-speaker]")]
      .find((input) => input.dataset.speaker === label)?.closest(".speaker-item");
  }

  addSpeaker(label) {
    if (this.speakers.includes(label)) {
      const item = this.speakerItem(label);
      if (item) item.hidden = false; // a label a correction had emptied, back on a line
      return;
    }
    this.speakers.push(label);
    const n = this.speakers.length;
    const item = document.createElement("li");
    item.className = `speaker-item sp-${this.colourOf(label)}`;
    const id = `speaker-name-${n}`;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.setAttribute("aria-hidden", "true");
    const caption = document.createElement("label");
    caption.htmlFor = id;
    caption.textContent = `Name for ${label}`;
    const input = document.createElement("input");
    input.id = id;
    input.type = "text";
    input.maxLength = 64;
    input.value = label;
    input.autocomplete = "off";
    input.dataset.speaker = label;
    input.addEventListener("input", () => this.rename(label, input.value.trim()));
    item.append(swatch, caption, input);
    if (this.known.has(label)) {
      const note = document.createElement("span");
      note.className = "hint known-voice";
      note.textContent = this.knownNote(label);
      item.append(note);
    } else if (this.remember) {
      this.addRemember(item, label, n, input);
    }
    this.speakerList.append(item);
    this.speakersPanel.hidden = false;
  }

  // "Remember voice…" opens a small form: "Remember this voice as [name] [Remember]"
  addRemember(item, label, n, nameInput) {
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "remember-toggle";
    toggle.textContent = "Remember voice…";
    toggle.setAttribute("aria-label", `Remember the voice of ${label}`);
    toggle.setAttribute("aria-expanded", "false");
    toggle.dataset.speaker = label;
    const form = document.createElement("form");
    form.className = "remember-form row";
    form.id = `remember-${n}`;
    form.hidden = true;
    form.dataset.speaker = label;
    toggle.setAttribute("aria-controls", form.id);
    const caption = document.createElement("label");
    caption.htmlFor = `remember-name-${n}`;
    caption.textContent = `Remember this voice (${label}) as`;
    const input = document.createElement("input");
    input.id = `remember-name-${n}`;
    input.type = "text";
    input.maxLength = 64;
    input.required = true;
    input.autocomplete = "off";
    const submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Remember";
    const status = document.createElement("p");
    status.className = "remember-status hint";
    status.setAttribute("role", "status");
    form.append(caption, input, submit, status);
    toggle.addEventListener("click", () => {
      form.hidden = !form.hidden;
      toggle.setAttribute("aria-expanded", String(!form.hidden));
      if (form.hidden) return;
      const given = nameInput.value.trim();
      if (!input.value) input.value = given === label ? "" : given;
      input.focus();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const name = input.value.trim();
      if (!name) return;
      submit.disabled = true;
      status.classList.remove("failed");
      status.textContent = "Remembering…";
      try {
        const voice = await this.remember(label, name);
        status.textContent = `Remembered as ${voice.name} (${Math.round(voice.speech_s)} s of speech).`;
        nameInput.value = voice.name;
        this.rename(label, voice.name);
      } catch (err) {
        status.classList.add("failed");
        status.textContent = `${err.message}${err.code ? ` (${err.code})` : ""}`;
      } finally {
        submit.disabled = false;
      }
    });
    item.append(toggle, form);
  }

  rename(label, name) {
    if (name) this.names.set(label, name);
    else this.names.delete(label);
    for (const tag of this.list.querySelectorAll(".speaker")) {
      if (tag.dataset.speaker === label) tag.textContent = this.nameOf(label);
    }
  }

  // A correction of these lines' speaker (live mode's speaker_update): each line's speaker tag is drawn
  // again; a label that no line carries any more leaves the speaker panel (its colour stays its own).
  relabel(indexes, { speaker, speaker_id = null, speaker_confidence = null }) {
    const before = new Set();
    for (const index of indexes) {
      const segment = this.segments[index];
      const line = this.lines[index];
      if (!segment || !line) continue;
      if (segment.speaker) before.add(segment.speaker);
      Object.assign(segment, { speaker, speaker_id, speaker_confidence });
      this.learn(segment);
      this.addSpeaker(speaker);
      const tag = this.speakerTag(segment);
      const old = line.querySelector(".speaker");
      if (old) old.replaceWith(tag);
      else line.querySelector(".time").after(tag);
    }
    for (const label of before) {
      const item = this.speakerItem(label);
      if (item && !this.segments.some((s) => s.speaker === label)) item.hidden = true;
    }
  }

  speakerTag(segment) {
    const tag = document.createElement("span");
    tag.className = `speaker sp-${this.colourOf(segment.speaker)}`;
    tag.dataset.speaker = segment.speaker;
    tag.textContent = this.nameOf(segment.speaker);
    const note = this.knownNote(segment.speaker);
    if (note) {
      tag.classList.add("known");
      tag.title = `${segment.speaker}: ${note}`;
      if (typeof segment.speaker_confidence === "number") tag.dataset.confidence = String(segment.speaker_confidence);
    }
    return tag;
  }

  renderLine(segment, index) {
    const line = document.createElement("li");
    line.className = "line";
    line.dataset.index = String(index);
    line.dataset.start = String(segment.start);
    // with audio to play, the time is a button (the keyboard's way to seek); without (live), a label
    const seekable = Boolean(this.player.src);
    const time = document.createElement(seekable ? "button" : "span");
    time.className = "time";
    time.textContent = clock(segment.start);
    if (seekable) {
      time.type = "button";
      time.setAttribute("aria-label", `Play from ${clock(segment.start)}`);
    }
    line.append(time);
    if (segment.speaker) line.append(this.speakerTag(segment));
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = segment.text.trim();
    line.append(text);
    // the button is the keyboard's way in; a pointer may click anywhere on the line
    line.addEventListener("click", () => this.seek(index));
    return line;
  }

  seek(index) {
    if (!this.player.src) return;
    this.player.currentTime = this.segments[index].start;
    this.highlight(index);
    this.player.play().catch(() => {}); // playback refused (no audio device, policy): the seek stands
  }

  // the segment being heard: the last one started at the player's time (a pause keeps the one before)
  follow() {
    const t = this.player.currentTime;
    let found = -1;
    for (let i = 0; i < this.segments.length && this.segments[i].start <= t + 0.05; i++) found = i;
    this.highlight(found);
  }

  highlight(index) {
    if (index === this.current) return;
    this.lines[this.current]?.classList.remove("current");
    this.lines[this.current]?.removeAttribute("aria-current");
    this.current = index;
    const line = this.lines[index];
    if (!line) return;
    line.classList.add("current");
    line.setAttribute("aria-current", "true");
    if (!this.player.paused) line.scrollIntoView({ block: "nearest" });
  }
}

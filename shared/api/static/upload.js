// File mode: pick or drop a file, choose options, submit it as a job, follow its progress, show the
// transcript with the file itself in the player, and download it in every format. The job's clip (the
// uploaded file, stored with the job until it expires) is where a speaker's voice is remembered from.

import { cancelJob, fetchResult, followJob, submitJob } from "./jobs.js";
import { clock } from "./transcript.js";
import { enrol, pickSpans } from "./voices.js";

const $ = (id) => document.getElementById(id);

export class FileMode {
  constructor({ view, config, voices, showError, clearError }) {
    this.view = view;
    this.voices = voices;
    this.config = config;
    this.showError = showError;
    this.clearError = clearError;
    this.file = null;
    this.jobId = null;
    this.audioUrl = null;
    this.input = $("file");
    this.bindPicker();
    this.bindOptions();
    $("upload-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.run();
    });
    $("cancel").addEventListener("click", () => this.cancel());
    for (const button of document.querySelectorAll("#downloads-panel button[data-format]")) {
      button.addEventListener("click", () => this.download(button.dataset.format, button));
    }
  }

  bindPicker() {
    const zone = $("dropzone");
    this.input.addEventListener("change", () => this.choose(this.input.files[0] || null));
    zone.addEventListener("dragover", (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragging");
      const files = e.dataTransfer?.files;
      if (!files?.length) return;
      this.input.files = files; // the picker shows the dropped file too
      this.choose(files[0]);
    });
    // a file dropped beside the zone must not replace the page
    for (const type of ["dragover", "drop"]) window.addEventListener(type, (e) => e.preventDefault());
  }

  bindOptions() {
    const diarize = $("diarize");
    const speakers = $("num-speakers");
    const sync = () => (speakers.disabled = !diarize.checked);
    diarize.addEventListener("change", sync);
    sync();
    const select = $("language");
    let names = null;
    try {
      names = new Intl.DisplayNames([navigator.language || "en", "en"], { type: "language" });
    } catch (_) {
      // no display names: the codes alone
    }
    const options = this.config.languages.map((code) => {
      let name = code;
      try {
        name = names?.of(code) || code;
      } catch (_) {
        // a code the browser does not know
      }
      return [name, code];
    });
    options.sort((a, b) => a[0].localeCompare(b[0]));
    for (const [name, code] of options) select.append(new Option(`${name} (${code})`, code));
  }

  choose(file) {
    this.file = file;
    $("file-name").textContent = file ? `${file.name} — ${(file.size / 1e6).toFixed(1)} MB` : "";
  }

  options() {
    const diarize = $("diarize").checked;
    return {
      diarize,
      num_speakers: diarize ? $("num-speakers").value.trim() : "",
      language: $("language").value,
      word_timestamps: $("word-timestamps").checked,
      identify: this.voices.option(), // "" (not sent) when off
    };
  }

  progress(text, fraction) {
    const bar = $("progress");
    if (fraction === null) bar.removeAttribute("value");
    else bar.value = Math.min(1, Math.max(0, fraction));
    $("progress-text").textContent = text;
  }

  busy(on) {
    $("submit").disabled = on;
    $("cancel").disabled = !on;
    $("live-toggle").disabled = on; // one transcript at a time in the one view
  }

  async run() {
    this.clearError();
    const file = this.file;
    if (!file) {
      this.showError(new Error("choose an audio file first"));
      this.input.focus();
      return;
    }
    const limit = this.config.max_upload_mb;
    if (limit && file.size > limit * 1024 * 1024) {
      this.showError(new Error(`the file is ${(file.size / 1048576).toFixed(1)} MB; this server takes at most ${limit} MB (MAX_UPLOAD_MB)`));
      return;
    }
    $("result-section").hidden = true;
    $("job-section").hidden = false;
    this.jobId = null;
    this.busy(true);
    this.progress("Uploading…", 0);
    try {
      const job = await submitJob(file, this.options(), (sent, total) =>
        this.progress(`Uploading… ${total ? Math.round((100 * sent) / total) : 0}%`, total ? sent / total : null),
      );
      this.jobId = job.job_id;
      const ended = await followJob(job.job_id, this.config.terminal_job_states, (j) => this.update(j));
      if (ended.status === "succeeded") this.showResult(ended, file);
      else if (ended.status === "failed") this.showError(ended.error || { message: "the job failed" });
    } catch (err) {
      this.progress("Stopped.", 0);
      this.showError(err);
    } finally {
      this.busy(false);
    }
  }

  update(job) {
    const { done, total } = job.progress;
    const at = total ? `${clock(done)} of ${clock(total)}` : "";
    const text = {
      queued: "Queued…",
      running: `Transcribing… ${at}`,
      succeeded: "Done.",
      failed: "Failed.",
      cancelled: "Cancelled.",
    }[job.status];
    const fraction = job.status === "succeeded" ? 1 : total ? done / total : job.status === "running" ? null : 0;
    this.progress(text, fraction);
  }

  async cancel() {
    if (!this.jobId) return;
    try {
      await cancelJob(this.jobId);
    } catch (err) {
      this.showError(err);
    }
  }

  showResult(job, file) {
    if (this.audioUrl) URL.revokeObjectURL(this.audioUrl);
    this.audioUrl = URL.createObjectURL(file);
    const player = this.view.player;
    player.src = this.audioUrl;
    player.hidden = false; // live mode hides the player and the downloads: it has neither a file nor a job
    $("downloads-panel").hidden = false;
    const clipId = job.clip_id;
    this.view.show(job.result, {
      remember: async (label, name) => {
        const spans = pickSpans(this.view.segments, label);
        if (!spans.length) throw new Error(`${label} has no line long enough to remember the voice from`);
        const voice = await enrol(name, clipId, spans);
        this.voices.refresh();
        return voice;
      },
    });
    const r = job.result;
    const speakers = r.speakers.length ? `, ${r.speakers.length} speaker${r.speakers.length > 1 ? "s" : ""}` : "";
    $("result-summary").textContent = `${file.name}: ${clock(r.duration)}, language ${r.language}${speakers}, ${r.segments.length} lines.`;
    $("result-section").hidden = false;
    $("result-title").focus?.();
  }

  async download(format, button) {
    if (!this.jobId) return;
    this.clearError();
    button.disabled = true;
    try {
      const blob = await fetchResult(this.jobId, format, this.view.renamed());
      const base = (this.file?.name || "transcript").replace(/\.[^.]+$/, "");
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = `${base}.${format}`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      this.showError(err);
    } finally {
      button.disabled = false;
    }
  }
}

// A transcription job through the job API: submit the file with its options, then follow the job's
// progress until it ends.

import { ApiError, getJSON, request, upload } from "./api.js";

const POLL_MS = 500;

export function submitJob(file, options, onUploadProgress) {
  const form = new FormData();
  form.append("file", file, file.name);
  for (const [name, value] of Object.entries(options)) {
    if (value !== null && value !== undefined && value !== "") form.append(name, String(value));
  }
  return upload("/api/transcriptions", form, onUploadProgress);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Poll until the job has ended (its status is one of `endedStates`, the server's /web/config
// terminal_job_states); onUpdate(job) after every read.
export async function followJob(jobId, endedStates, onUpdate) {
  for (;;) {
    let job;
    try {
      job = await getJSON(`/api/jobs/${jobId}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 429) {
        await sleep(2000); // rate limited: read less often, the job goes on
        continue;
      }
      throw err;
    }
    onUpdate(job);
    if (endedStates.includes(job.status)) return job;
    await sleep(POLL_MS);
  }
}

export function cancelJob(jobId) {
  return request(`/api/jobs/${jobId}`, { method: "DELETE" });
}

// One download, rendered by the server with the renamed speakers.
export async function fetchResult(jobId, format, speakerNames) {
  const query = new URLSearchParams({ format });
  if (Object.keys(speakerNames).length) query.set("speaker_names", JSON.stringify(speakerNames));
  const response = await request(`/api/jobs/${jobId}/result?${query}`, { accept: "*/*" });
  return response.blob();
}

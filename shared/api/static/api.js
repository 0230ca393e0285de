// The page's one way to talk to the API: same origin, the API key (if any) from session storage,
// and every failure turned into an ApiError carrying the API's own {"error": {code, message}}.

const KEY_STORAGE = "whospoke.apiKey";

export class ApiError extends Error {
  constructor(message, { status = 0, code = "error" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

// An error body in the API's shape, or a readable stand-in when the body is something else
// (a proxy's HTML page, an empty answer).
function errorFrom(status, statusText, bodyText) {
  try {
    const error = JSON.parse(bodyText).error;
    if (error && typeof error.message === "string") {
      return new ApiError(error.message, { status, code: error.code || "error" });
    }
  } catch (_) {
    // not JSON: fall through
  }
  const snippet = (bodyText || "").replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
  return new ApiError(`the server answered ${status} ${statusText}${snippet ? `: ${snippet}` : ""}`, { status, code: "http_error" });
}

// `json`: a value sent as an application/json body (else `body` as it is: a FormData, nothing)
export async function request(path, { method = "GET", body, json, accept = "application/json" } = {}) {
  const extra = { Accept: accept };
  if (json !== undefined) {
    body = JSON.stringify(json);
    extra["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, { method, body, headers: headers(extra), cache: "no-store" });
  } catch (err) {
    throw new ApiError(`could not reach the server (${err.message})`, { code: "network_error" });
  }
  if (!response.ok) throw errorFrom(response.status, response.statusText, await response.text());
  return response;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

// A single-use ticket for one live WebSocket (POST /api/live/tickets, the key in a header as for any call):
// a browser cannot set headers on a WebSocket, and a key in its URL would end up in logs.
export async function liveTicket() {
  return (await getJSON("/api/live/tickets", { method: "POST" })).ticket;
}

// A multipart POST with upload progress (fetch cannot report it): onProgress(sentBytes, totalBytes).
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(headers({ Accept: "application/json" }))) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.addEventListener("progress", (e) => onProgress?.(e.loaded, e.lengthComputable ? e.total : null));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch (_) {
          reject(new ApiError("the server's answer was not JSON", { status: xhr.status, code: "bad_response" }));
        }
      } else {
        reject(errorFrom(xhr.status, xhr.statusText, xhr.responseText));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError("the upload did not reach the server (connection closed)", { code: "network_error" })));
    xhr.addEventListener("abort", () => reject(new ApiError("the upload was stopped", { code: "aborted" })));
    xhr.send(form);
  });
}

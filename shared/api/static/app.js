// The page's entry point: read the server's config, set up the API-key field, the transcript view and
// the two modes (a file, the microphone). Each way of producing a transcript is its own module fed
// into the one view.

import { ApiError, getJSON, getKey, setKey } from "./api.js";
import { LiveMode } from "./live.js";
import { TranscriptView } from "./transcript.js";
import { FileMode } from "./upload.js";
import { VoicesPanel } from "./voices.js";

const $ = (id) => document.getElementById(id);

function clearError() {
  const box = $("error");
  box.hidden = true;
  box.replaceChildren();
}

// The API's message as it is, with its code; never a blank page.
function showError(err) {
  const box = $("error");
  const message = document.createElement("p");
  message.className = "error-message";
  message.textContent = err?.message || String(err);
  box.replaceChildren(message);
  if (err?.code) {
    const code = document.createElement("p");
    code.className = "error-code";
    code.textContent = `code: ${err.code}${err.status ? ` (HTTP ${err.status})` : ""}`;
    box.append(code);
  }
  box.hidden = false;
  if (err instanceof ApiError && err.status === 401) askForKey();
}

function askForKey() {
  $("key-section").hidden = false;
  $("api-key").focus();
}

function setUpKey(required, onChange) {
  const input = $("api-key");
  const status = $("key-status");
  input.value = getKey();
  $("key-section").hidden = !required && !getKey();
  const describe = () => {
    status.textContent = getKey()
      ? "Key set for this tab (session storage only), sent as the X-API-Key header."
      : "No key set. It is kept in this tab's session storage only.";
  };
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setKey(input.value.trim());
    clearError();
    describe();
    onChange();
  });
  $("forget-key").addEventListener("click", () => {
    setKey("");
    input.value = "";
    describe();
    onChange();
  });
  describe();
}

async function main() {
  window.addEventListener("unhandledrejection", (e) => showError(e.reason));
  let config;
  try {
    config = await getJSON("/web/config");
  } catch (err) {
    showError(err);
    return;
  }
  const voices = new VoicesPanel({
    showError,
    clearError,
    canAsk: () => !config.api_keys_required || Boolean(getKey()),
  });
  setUpKey(config.api_keys_required, () => voices.refresh());
  voices.refresh();
  const view = new TranscriptView({
    list: $("transcript"),
    speakerList: $("speaker-list"),
    speakersPanel: $("speakers-panel"),
    player: $("player"),
  });
  const file = new FileMode({ view, config, voices, showError, clearError });
  new LiveMode({
    view,
    config,
    showError,
    clearError,
    options: () => {
      const { word_timestamps: _, ...options } = file.options(); // finals always carry their words
      return options;
    },
    onBusy: (on) => ($("submit").disabled = on), // one transcript at a time in the one view
  });
  document.body.dataset.ready = "true";
}

main();

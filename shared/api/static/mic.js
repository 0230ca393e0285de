// The microphone as PCM16 mono: getUserMedia into an AudioContext at 16 kHz (the model's rate, so the
// browser resamples and the stream stays small) or, where the browser refuses that, at its own rate;
// an AudioWorklet (pcm-worklet.js) turns the samples into PCM16 pieces.

const WANTED_RATE = 16000;

export class MicrophoneError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

async function capture() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia || !window.AudioWorkletNode) {
    throw new MicrophoneError(
      "live mode needs the microphone, which browsers allow only on https:// pages or on localhost",
      "microphone_unavailable",
    );
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
    });
  } catch (err) {
    const why = {
      NotAllowedError: "microphone access was refused: allow it for this page and start again",
      NotFoundError: "no microphone was found",
      NotReadableError: "the microphone is in use by another program or could not be read",
    }[err.name];
    throw new MicrophoneError(why || `the microphone could not be opened (${err.message})`, "microphone_error");
  }
}

function sourceIn(media, rate) {
  const context = rate ? new AudioContext({ sampleRate: rate }) : new AudioContext();
  try {
    return { context, source: context.createMediaStreamSource(media) };
  } catch (err) {
    context.close();
    throw err;
  }
}

// Opens the microphone: {rate, start(onPiece), stop()}; stop() resolves once the last piece is out.
export async function openMicrophone() {
  const media = await capture();
  let graph;
  try {
    graph = sourceIn(media, WANTED_RATE);
  } catch (_) {
    graph = sourceIn(media, 0); // a browser that will not resample a microphone: its own rate
  }
  const { context, source } = graph;
  await context.audioWorklet.addModule("/static/pcm-worklet.js");
  const node = new AudioWorkletNode(context, "pcm16-writer", {
    numberOfInputs: 1,
    numberOfOutputs: 0, // a sink: the browser pulls it without sending anything to the speakers
    channelCount: 1,
    channelCountMode: "explicit",
    channelInterpretation: "speakers",
    processorOptions: { chunkSeconds: 0.1 },
  });
  let flushed = null;
  let stopped = null;
  return {
    rate: context.sampleRate,
    start(onPiece) {
      node.port.onmessage = (e) => {
        if (e.data === "flushed") flushed?.();
        else onPiece(e.data);
      };
      source.connect(node);
      return context.resume();
    },
    stop() {
      stopped ??= (async () => {
        for (const track of media.getTracks()) track.stop();
        await new Promise((resolve) => {
          flushed = resolve;
          node.port.postMessage("flush");
        });
        source.disconnect();
        await context.close();
      })();
      return stopped;
    },
  };
}

// Runs on the audio thread: the microphone's samples (Float32, mono) as PCM16 little-endian, posted to
// the page in pieces of `chunkSeconds` (the buffer is transferred, not copied). "flush" posts what is
// left, then "flushed".

class Pcm16Writer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const seconds = options.processorOptions?.chunkSeconds ?? 0.1;
    this.size = Math.max(128, Math.round(sampleRate * seconds));
    this.fresh();
    this.port.onmessage = (e) => {
      if (e.data === "flush") {
        this.post();
        this.port.postMessage("flushed");
      }
    };
  }

  fresh() {
    // Int16Array uses the platform's byte order: little-endian on every platform a browser runs on
    this.samples = new Int16Array(this.size);
    this.filled = 0;
  }

  post() {
    if (!this.filled) return;
    const piece = this.samples.buffer.slice(0, this.filled * 2);
    this.port.postMessage(piece, [piece]);
    this.fresh();
  }

  process(inputs) {
    const channel = inputs[0]?.[0]; // the node downmixes to one channel (channelCount 1)
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        const s = Math.max(-1, Math.min(1, channel[i]));
        this.samples[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.filled === this.size) this.post();
      }
    }
    return true;
  }
}

registerProcessor("pcm16-writer", Pcm16Writer);

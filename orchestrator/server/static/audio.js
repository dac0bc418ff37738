// Audio in and out of the page: the microphone as 100 ms base64 PCM16 pieces, and answers through a jitter buffer.
export const RATE = 24000;
const JITTER_S = 0.12; // buffered before a response starts (or restarts after running dry)
const WORKLET_LOADED = new WeakSet(); // a processor registers once per context: the microphone may open again

export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromBase64(text) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return new Int16Array(bytes.buffer, 0, bytes.length >> 1);
}

export class Microphone {
  static async open(context, onPiece) {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    if (!WORKLET_LOADED.has(context)) {
      await context.audioWorklet.addModule("/playground/capture-worklet.js");
      WORKLET_LOADED.add(context);
    }
    const source = context.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(context, "pcm16-capture", {
      processorOptions: { targetRate: RATE, chunkMs: 100 },
    });
    const mute = context.createGain();
    mute.gain.value = 0; // pulled by the graph, heard by no one
    capture.port.onmessage = (event) => onPiece(event.data);
    source.connect(capture).connect(mute).connect(context.destination);
    return new Microphone(stream, source, capture, mute);
  }

  constructor(stream, source, capture, mute) {
    Object.assign(this, { stream, source, capture, mute });
  }

  close() {
    this.stream.getTracks().forEach((track) => track.stop());
    this.capture.port.onmessage = null;
    for (const node of [this.source, this.capture, this.mute]) node.disconnect();
  }
}

// Plays PCM16 deltas in order, gap-free, and knows how much of the current answer was really heard.
export class Player {
  constructor(context, onChange) {
    this.context = context;
    this.onChange = onChange;
    this.output = context.createGain();
    this.output.connect(context.destination);
    this.nextTime = 0;
    this.itemId = null;
    this.spans = [];       // [start, duration] of the current item's scheduled pieces, in context time
    this.live = new Set(); // scheduled sources not yet ended
    this.played = 0;       // pieces that played to their end
  }

  get playing() {
    return this.live.size > 0;
  }

  // Schedules one delta right after the last; returns its length in seconds.
  enqueue(itemId, base64, rate = RATE) {
    const pcm = fromBase64(base64);
    if (!pcm.length) return 0;
    if (itemId !== this.itemId) {
      this.itemId = itemId;
      this.spans = [];
    }
    const buffer = this.context.createBuffer(1, pcm.length, rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.output);
    const now = this.context.currentTime;
    if (this.nextTime < now + 0.01) this.nextTime = now + JITTER_S;
    source.start(this.nextTime);
    this.spans.push([this.nextTime, buffer.duration]);
    this.nextTime += buffer.duration;
    this.live.add(source);
    source.onended = () => {
      this.live.delete(source);
      if (!source.cut) this.played += 1;
      this.onChange();
    };
    return buffer.duration;
  }

  // Milliseconds of the current item heard so far.
  heardMs() {
    const now = this.context.currentTime;
    const heard = this.spans.reduce((sum, [start, length]) => sum + Math.min(Math.max(now - start, 0), length), 0);
    return Math.floor(heard * 1000);
  }

  // Silence everything at once; returns what was cut ({itemId, audioEndMs}) or null when nothing was playing.
  stop() {
    if (!this.playing) return null;
    const cut = { itemId: this.itemId, audioEndMs: this.heardMs() };
    for (const source of this.live) {
      source.cut = true;
      source.stop();
    }
    this.live.clear();
    this.nextTime = 0;
    this.spans = [];
    return cut;
  }
}

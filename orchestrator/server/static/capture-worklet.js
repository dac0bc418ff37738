// Microphone samples at the context's rate -> 24 kHz PCM16 (linear interpolation), posted in 100 ms pieces.
// No low-pass before it: speech holds little energy above 12 kHz (24 kHz's Nyquist), so what aliases is faint.
class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, chunkMs } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample
    this.position = 0;                   // next output's place in this block; -1 is the previous block's last
    this.last = 0;
    this.size = Math.round((targetRate * chunkMs) / 1000);
    this.out = new Int16Array(this.size);
    this.filled = 0;
  }

  process(inputs) {
    const samples = inputs[0]?.[0];
    if (!samples) return true;
    while (Math.floor(this.position) + 1 < samples.length) {
      const i = Math.floor(this.position);
      const a = i < 0 ? this.last : samples[i];
      const value = a + (samples[i + 1] - a) * (this.position - i);
      this.out[this.filled++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
      if (this.filled === this.size) {
        this.port.postMessage(this.out.buffer, [this.out.buffer]);
        this.out = new Int16Array(this.size);
        this.filled = 0;
      }
      this.position += this.step;
    }
    this.position -= samples.length;
    this.last = samples[samples.length - 1];
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);

// AudioWorklet: microphone samples at the context's rate (44.1/48 kHz) in, 16-bit mono PCM at
// the target rate (16 kHz) out, in chunks of `chunkSamples` posted to the main thread.
// Down-sampling: a windowed-sinc low-pass below the target's Nyquist frequency, then linear
// interpolation at the output instants.

function lowpass(cutoff, taps) {
  // cutoff in cycles per input sample; Blackman window; unity gain at DC
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * w;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum;
  return h;
}

class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    const target = opts.targetRate || 16000;
    this.step = sampleRate / target; // input samples per output sample
    this.taps = this.step > 1 ? lowpass(0.46 / this.step, 63) : null;
    // the last `taps` inputs, stored twice so the window is always contiguous
    this.ring = this.taps ? new Float32Array(this.taps.length * 2) : null;
    this.head = 0;
    this.t = 0; // next output instant, in input samples after `prev`
    this.prev = 0;
    this.chunk = new Int16Array(opts.chunkSamples || 1600);
    this.fill = 0;
    this.energy = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === 'flush') {
        this.emit();
        this.running = false;
        this.port.postMessage({ done: true });
      }
    };
  }

  filter(x) {
    if (!this.taps) return x;
    const n = this.taps.length;
    this.ring[this.head] = x;
    this.ring[this.head + n] = x;
    this.head = (this.head + 1) % n;
    let y = 0;
    for (let i = 0; i < n; i++) y += this.taps[i] * this.ring[this.head + i];
    return y;
  }

  push(v) {
    const s = v > 1 ? 1 : v < -1 ? -1 : v;
    this.chunk[this.fill++] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
    this.energy += s * s;
    if (this.fill === this.chunk.length) this.emit();
  }

  emit() {
    if (this.fill === 0) return;
    const pcm = this.chunk.slice(0, this.fill);
    const rms = Math.sqrt(this.energy / this.fill);
    this.fill = 0;
    this.energy = 0;
    this.port.postMessage({ pcm, rms }, [pcm.buffer]);
  }

  process(inputs) {
    if (!this.running) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (let c = 0; c < channels; c++) x += input[c][i];
      const y = this.filter(x / channels);
      while (this.t <= 1) {
        this.push(this.prev + (y - this.prev) * this.t);
        this.t += this.step;
      }
      this.t -= 1;
      this.prev = y;
    }
    return true;
  }
}

registerProcessor('pcm-capture', PcmCapture);

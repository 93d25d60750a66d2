// The microphone as 16 kHz 16-bit mono PCM: getUserMedia -> AudioWorklet (capture-worklet.js).
export const RATE = 16000;
const CHUNK = 1600; // 100 ms: 3200 bytes per WebSocket frame

function micError(err) {
  const reasons = {
    NotAllowedError: 'Microphone access was refused. Allow it in the browser (the icon in the address bar) and try again.',
    SecurityError: 'Microphone access was refused by the browser.',
    NotFoundError: 'No microphone was found.',
    NotReadableError: 'The microphone cannot be read (another application may hold it).',
    OverconstrainedError: 'The microphone does not support the requested settings.',
  };
  return new Error(reasons[err?.name] || `Cannot open the microphone: ${err?.message || err}`);
}

export class MicCapture {
  // onChunk(Int16Array) every 100 ms of audio; onLevel(rms 0..1)
  constructor({ onChunk, onLevel } = {}) {
    this.onChunk = onChunk;
    this.onLevel = onLevel;
    this.samples = 0;
  }

  get seconds() {
    return this.samples / RATE;
  }

  async start() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error(
        'The browser gives this page no microphone: it allows one only on https:// pages and on ' +
          'http://localhost. Open the console over https (or on the machine itself).',
      );
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 }, video: false });
    } catch (err) {
      throw micError(err);
    }
    try {
      this.ctx = new AudioContext({ latencyHint: 'interactive' });
      await this.ctx.audioWorklet.addModule(new URL('./capture-worklet.js', import.meta.url));
      this.source = this.ctx.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(this.ctx, 'pcm-capture', {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { targetRate: RATE, chunkSamples: CHUNK },
      });
      this.node.port.onmessage = ({ data }) => {
        if (data.done) {
          this.flushed?.();
          return;
        }
        this.samples += data.pcm.length;
        this.onChunk?.(data.pcm);
        this.onLevel?.(data.rms);
      };
      // The worklet's output is silent; connecting it keeps the graph pulling it.
      const mute = this.ctx.createGain();
      mute.gain.value = 0;
      this.source.connect(this.node).connect(mute).connect(this.ctx.destination);
      if (this.ctx.state === 'suspended') await this.ctx.resume();
    } catch (err) {
      await this.release();
      throw err;
    }
  }

  // Flush the last partial chunk (the tail of what was said), then release the microphone.
  async stop() {
    if (this.node) {
      await new Promise((resolve) => {
        this.flushed = resolve;
        this.node.port.postMessage('flush');
        setTimeout(resolve, 500);
      });
    }
    await this.release();
  }

  async release() {
    this.stream?.getTracks().forEach((track) => track.stop());
    this.source?.disconnect();
    this.node?.disconnect();
    if (this.ctx && this.ctx.state !== 'closed') await this.ctx.close().catch(() => {});
    this.stream = this.ctx = this.node = this.source = null;
  }
}

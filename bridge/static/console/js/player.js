// Streaming playback of synthesised audio as its bytes arrive:
//  - pcm and 16-bit wav: Web Audio, each piece scheduled right after the previous one;
//  - mp3 and aac: MediaSource on the <audio> element;
//  - anything else (flac, ogg, opus): the whole file, played when it is complete.
import { parseWavHeader, wavBlob } from './wav.js';

export const MIME = {
  pcm: 'application/octet-stream',
  wav: 'audio/wav',
  mp3: 'audio/mpeg',
  aac: 'audio/aac',
  flac: 'audio/flac',
  ogg: 'audio/ogg',
  opus: 'audio/ogg',
};

function concat(a, b) {
  if (!a.length) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// s16le PCM -> Web Audio
class PcmOut {
  constructor(sampleRate, channels, onStart) {
    this.ctx = new AudioContext();
    this.ctx.resume().catch(() => {});
    this.rate = sampleRate;
    this.channels = channels;
    this.onStart = onStart;
    this.carry = new Uint8Array(0);
    this.pending = [];
    this.pendingFrames = 0;
    this.next = 0;
    this.segments = [];
    this.sources = new Set();
    this.last = null;
  }

  push(bytes) {
    const data = concat(this.carry, bytes);
    const frameBytes = 2 * this.channels;
    const usable = data.length - (data.length % frameBytes);
    this.carry = data.slice(usable);
    if (usable === 0) return;
    this.pending.push(data.subarray(0, usable));
    this.pendingFrames += usable / frameBytes;
    if (this.pendingFrames >= this.rate * 0.05) this.flush(); // at least 50 ms per buffer
  }

  flush() {
    if (!this.pendingFrames) return;
    const frames = this.pendingFrames;
    const buffer = this.ctx.createBuffer(1, frames, this.rate);
    const out = buffer.getChannelData(0);
    let i = 0;
    for (const piece of this.pending) {
      const view = new DataView(piece.buffer, piece.byteOffset, piece.byteLength);
      for (let at = 0; at < piece.byteLength; at += 2 * this.channels) {
        let v = 0;
        for (let c = 0; c < this.channels; c++) v += view.getInt16(at + 2 * c, true);
        out[i++] = v / this.channels / 32768;
      }
    }
    this.pending = [];
    this.pendingFrames = 0;
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (this.next < now + 0.02) this.next = now + (this.segments.length ? 0.03 : 0.08); // (re)buffer
    if (!this.segments.length) this.onStart?.((this.next - now) * 1000);
    src.start(this.next);
    this.segments.push([this.next, buffer.duration]);
    this.next += buffer.duration;
    this.sources.add(src);
    src.onended = () => this.sources.delete(src);
    this.last = src;
  }

  finish() {
    this.flush();
    return new Promise((resolve) => {
      if (!this.last || !this.sources.size) resolve();
      else this.last.addEventListener('ended', () => resolve(), { once: true });
    });
  }

  get played() {
    const now = this.ctx.currentTime;
    return this.segments.reduce((sum, [start, dur]) => sum + Math.min(Math.max(now - start, 0), dur), 0);
  }

  get duration() {
    return this.segments.reduce((sum, [, dur]) => sum + dur, 0);
  }

  stop() {
    for (const src of this.sources) src.stop();
    this.ctx.close().catch(() => {});
  }
}

// mp3 / aac -> MediaSource -> <audio>
class MseOut {
  constructor(audio, mime, onStart) {
    this.audio = audio;
    this.queue = [];
    this.ended = false;
    this.ms = new MediaSource();
    this.url = URL.createObjectURL(this.ms);
    audio.src = this.url;
    audio.hidden = false;
    this.ms.addEventListener(
      'sourceopen',
      () => {
        this.sb = this.ms.addSourceBuffer(mime);
        this.sb.mode = 'sequence';
        this.sb.addEventListener('updateend', () => this.pump());
        this.pump();
      },
      { once: true },
    );
    audio.addEventListener('playing', () => onStart?.(0), { once: true });
    this.playing = audio.play().catch((err) => {
      this.playError = err;
    });
  }

  pump() {
    if (!this.sb || this.sb.updating || this.ms.readyState !== 'open') return;
    if (this.queue.length) this.sb.appendBuffer(this.queue.shift());
    else if (this.ended) this.ms.endOfStream();
  }

  push(bytes) {
    this.queue.push(bytes);
    this.pump();
  }

  finish() {
    this.ended = true;
    this.pump();
    return new Promise((resolve) => {
      if (this.audio.ended || this.playError) resolve();
      this.audio.addEventListener('ended', () => resolve(), { once: true });
      this.audio.addEventListener('error', () => resolve(), { once: true });
    });
  }

  get played() {
    return this.audio.currentTime;
  }

  get duration() {
    const b = this.audio.buffered;
    return b.length ? b.end(b.length - 1) : 0;
  }

  stop() {
    this.audio.pause();
  }
}

// The whole file, then <audio>
class FileOut {
  constructor(audio, mime, onStart) {
    this.audio = audio;
    this.mime = mime;
    this.onStart = onStart;
  }

  push() {}

  finish(parts) {
    this.audio.src = URL.createObjectURL(new Blob(parts, { type: this.mime }));
    this.audio.hidden = false;
    this.audio.addEventListener('playing', () => this.onStart?.(0), { once: true });
    return new Promise((resolve) => {
      this.audio.addEventListener('ended', () => resolve(), { once: true });
      this.audio.addEventListener('error', () => resolve(), { once: true });
      this.audio.play().catch(() => resolve());
    });
  }

  get played() {
    return this.audio.currentTime || 0;
  }

  get duration() {
    return Number.isFinite(this.audio.duration) ? this.audio.duration : 0;
  }

  stop() {
    this.audio.pause();
  }
}

export class Playback {
  // format: pcm wav mp3 aac flac ogg opus; sampleRate: of pcm; frames: each push() is one
  // WebSocket frame (a wav stream may repeat its header on every frame).
  constructor({ format, sampleRate, audio, frames = false }) {
    this.format = format;
    this.rate = sampleRate;
    this.audio = audio;
    this.frames = frames;
    this.parts = [];
    this.bytes = 0;
    this.t0 = performance.now();
    this.firstAudioMs = null; // first byte of audio after the request
    this.endMs = null; // last byte
    this.playStartMs = null; // playback began
    this.head = new Uint8Array(0);
    this.mode = 'file';
    const mime = MIME[format] || 'application/octet-stream';
    const started = (delayMs) => {
      this.playStartMs ??= performance.now() - this.t0 + delayMs;
    };
    this.started = started;
    if (format === 'pcm') {
      this.out = new PcmOut(sampleRate, 1, started);
      this.mode = 'webaudio';
    } else if ((format === 'mp3' || format === 'aac') && window.MediaSource?.isTypeSupported(mime)) {
      this.out = new MseOut(audio, mime, started);
      this.mode = 'mediasource';
    } else if (format === 'wav') {
      this.out = null; // chosen when the header is read
      this.mode = 'webaudio';
    } else {
      this.out = new FileOut(audio, mime, started);
    }
  }

  push(bytes) {
    if (!bytes.length) return;
    this.parts.push(bytes);
    this.bytes += bytes.length;
    this.firstAudioMs ??= performance.now() - this.t0;
    if (this.format !== 'wav') {
      this.out.push(bytes);
      return;
    }
    if (!this.out) {
      this.head = concat(this.head, bytes);
      const header = parseWavHeader(this.head);
      if (header === null) return;
      if (header.error || header.format !== 1 || header.bits !== 16) {
        this.out = new FileOut(this.audio, MIME.wav, this.started); // not streamable here
        this.mode = 'file';
        return;
      }
      this.wav = header;
      this.out = new PcmOut(header.sampleRate, header.channels, this.started);
      this.out.push(this.head.subarray(header.dataOffset));
      this.head = null;
      return;
    }
    if (this.frames && this.mode === 'webaudio' && bytes.length >= 12) {
      const header = parseWavHeader(bytes); // a frame that is a whole wav file of its own
      if (header && !header.error) bytes = bytes.subarray(header.dataOffset);
    }
    this.out.push(bytes);
  }

  // The stream is complete: resolves when playback has ended.
  async finish() {
    this.endMs = performance.now() - this.t0;
    if (!this.out) this.out = new FileOut(this.audio, MIME.wav, this.started);
    await this.out.finish(this.parts);
  }

  get played() {
    return this.out ? this.out.played : 0;
  }

  get duration() {
    return this.out ? this.out.duration : 0;
  }

  stop() {
    this.out?.stop();
  }

  // What was received, as the requested format (for download).
  blob() {
    return new Blob(this.parts, { type: MIME[this.format] || 'application/octet-stream' });
  }

  // Something the <audio> element can replay afterwards.
  replayBlob() {
    return this.format === 'pcm' ? wavBlob(this.parts, this.rate) : this.blob();
  }
}

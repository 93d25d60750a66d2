// WAV: write 16-bit mono files, read the header of a streamed one.

export function wavHeader(dataBytes, sampleRate, channels = 1) {
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (offset, text) => [...text].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, 'RIFF');
  header.setUint32(4, 36 + dataBytes, true);
  ascii(8, 'WAVE');
  ascii(12, 'fmt ');
  header.setUint32(16, 16, true);
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, channels, true);
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * channels * 2, true);
  header.setUint16(32, channels * 2, true);
  header.setUint16(34, 16, true);
  ascii(36, 'data');
  header.setUint32(40, dataBytes, true);
  return header.buffer;
}

// Int16Array chunks (or raw s16le byte chunks) -> a WAV Blob
export function wavBlob(chunks, sampleRate) {
  const bytes = chunks.reduce((n, c) => n + c.byteLength, 0);
  return new Blob([wavHeader(bytes, sampleRate), ...chunks], { type: 'audio/wav' });
}

const text4 = (bytes, at) => String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);

// The header of a WAV stream from its first bytes: {sampleRate, channels, bits, format, dataOffset},
// null while more bytes are needed, or {error} when this is not a WAV file we can stream.
export function parseWavHeader(bytes) {
  if (bytes.length < 12) return null;
  if (text4(bytes, 0) !== 'RIFF' || text4(bytes, 8) !== 'WAVE') return { error: 'not a RIFF/WAVE stream' };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 12;
  let fmt = null;
  while (at + 8 <= bytes.length) {
    const id = text4(bytes, at);
    const size = view.getUint32(at + 4, true);
    if (id === 'data') {
      if (!fmt) return { error: 'data before fmt' };
      return { ...fmt, dataOffset: at + 8 };
    }
    if (at + 8 + size > bytes.length) return null;
    if (id === 'fmt ') {
      fmt = {
        format: view.getUint16(at + 8, true),
        channels: view.getUint16(at + 10, true),
        sampleRate: view.getUint32(at + 12, true),
        bits: view.getUint16(at + 22, true),
      };
    }
    at += 8 + size + (size & 1);
  }
  return null;
}

// TTS playground: NLS REST (chunked), NLS WebSocket (SpeechSynthesizer) or OpenAI speech (audio
// stream or SSE); playback starts with the first bytes (player.js); download what was received.
import { call, credentials, errorFrom, errorFromBody, ServiceError } from './api.js';
import { NlsSocket } from './nls.js';
import { Playback } from './player.js';
import { events, loadVoices, serves, state, voiceItems } from './shared.js';
import { $, $$, clearError, el, fillSelect, fmtBytes, fmtMs, setState, showError } from './ui.js';

const FORMATS = {
  rest: ['pcm', 'wav', 'mp3', 'flac', 'ogg', 'opus'],
  ws: ['pcm', 'wav', 'mp3'],
  openai: ['mp3', 'pcm', 'wav', 'aac', 'flac', 'opus'],
};
const OPENAI_PCM_RATE = 24000;

async function pump(stream, playback) {
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    playback.push(value);
  }
}

function base64Bytes(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// text/event-stream of speech.audio.delta / speech.audio.done (OpenAI stream_format "sse")
async function pumpSse(stream, playback) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      let name = 'message';
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trim());
      }
      if (!data.length) continue;
      let event;
      try {
        event = JSON.parse(data.join('\n'));
      } catch {
        continue;
      }
      if (name === 'error' || event.error || event.type === 'error') throw errorFromBody(event);
      const audio = event.audio ?? event.delta;
      if (event.type === 'speech.audio.delta' && audio) playback.push(base64Bytes(audio));
      if (event.type === 'speech.audio.done') return;
    }
  }
}

export function init() {
  const form = $('#tts-form');
  const apiSel = $('#tts-api');
  const voiceSel = $('#tts-voice');
  const formatSel = $('#tts-format');
  const textBox = $('#tts-text');
  const go = $('#tts-go');
  const stopBtn = $('#tts-stop');
  const download = $('#tts-download');
  const errorBox = $('#tts-error');
  const stateLine = $('#tts-state');
  const stats = $('#tts-stats');
  const audio = $('#tts-audio');
  const subtitles = $('#tts-subtitles');
  const panel = $('#panel-tts');

  let current = null; // {playback, abort, sock, timer}

  for (const id of ['tts-volume', 'tts-speech-rate', 'tts-pitch', 'tts-speed']) {
    const input = $(`#${id}`);
    const out = $(`#${id}-out`);
    input.addEventListener('input', () => (out.value = input.value));
  }
  const count = () => ($('#tts-count').textContent = `${textBox.value.length} characters`);
  textBox.addEventListener('input', count);
  count();

  function syncApi() {
    const api = apiSel.value;
    const formats = FORMATS[api];
    const keep = formats.includes(formatSel.value) ? formatSel.value : formats[0];
    fillSelect(formatSel, formats.map((f) => ({ value: f })), { keep: false });
    formatSel.value = keep;
    $$('.nls-only', panel).forEach((node) => (node.hidden = api === 'openai'));
    $$('.openai-only', panel).forEach((node) => (node.hidden = api !== 'openai'));
  }
  apiSel.addEventListener('change', syncApi);
  syncApi();

  events.addEventListener('voices', () => {
    fillSelect(voiceSel, voiceItems());
    if (state.voicesError) showError(errorBox, state.voicesError);
  });
  events.addEventListener('service', () => {
    const missing = !serves('tts');
    $('.tts-missing', panel).hidden = !missing;
    go.disabled = missing;
  });
  document.addEventListener('funspeech:use-voice', (e) => {
    if (![...voiceSel.options].some((o) => o.value === e.detail)) voiceSel.append(el('option', { value: e.detail }, e.detail));
    voiceSel.value = e.detail;
  });
  $('#tts-voices-refresh').addEventListener('click', () => loadVoices().catch(() => {}));

  function renderStats(p, phase) {
    const rows = [
      ['State', phase],
      ['Player', { webaudio: 'Web Audio (streaming)', mediasource: 'MediaSource (streaming)', file: 'whole file' }[p.mode]],
      ['First audio after', p.firstAudioMs === null ? '–' : `${Math.round(p.firstAudioMs)} ms`],
      ['Playback started after', p.playStartMs === null ? '–' : `${Math.round(p.playStartMs)} ms`],
      ['Synthesis finished after', p.endMs === null ? '–' : `${Math.round(p.endMs)} ms`],
      ['Received', fmtBytes(p.bytes)],
      ['Played', `${fmtMs(p.played * 1000)} of ${fmtMs(p.duration * 1000)}`],
    ];
    stats.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
    Object.assign(stats.dataset, {
      phase,
      mode: p.mode,
      bytes: p.bytes,
      firstAudioMs: p.firstAudioMs ?? '',
      playStartMs: p.playStartMs ?? '',
      endMs: p.endMs ?? '',
      played: p.played.toFixed(3),
      duration: p.duration.toFixed(3),
    });
  }

  function stopCurrent() {
    if (!current) return;
    current.abort.abort();
    current.sock?.close();
    current.playback.stop();
    clearInterval(current.timer);
    current = null;
  }

  async function speakRest(job, params) {
    const body = {
      text: params.text,
      voice: params.voice,
      format: params.format,
      sample_rate: params.rate,
      volume: params.volume,
      speech_rate: params.speechRate,
      pitch_rate: params.pitch,
    };
    if (credentials.appkey()) body.appkey = credentials.appkey();
    if (params.instructions) body.prompt = params.instructions;
    const response = await call('stream/v1/tts', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: job.abort.signal,
    });
    if ((response.headers.get('Content-Type') || '').includes('application/json')) throw await errorFrom(response);
    job.taskId = response.headers.get('task_id');
    await pump(response.body, job.playback);
  }

  async function speakOpenai(job, params) {
    const body = {
      model: 'tts-1',
      input: params.text,
      voice: params.voice,
      response_format: params.format,
      speed: params.speed,
      stream_format: params.sse ? 'sse' : 'audio',
    };
    if (params.instructions) body.instructions = params.instructions;
    const response = await call('v1/audio/speech', {
      method: 'POST',
      auth: 'openai',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: job.abort.signal,
    });
    job.taskId = response.headers.get('X-Request-ID');
    const type = response.headers.get('Content-Type') || '';
    if (type.includes('text/event-stream')) await pumpSse(response.body, job.playback);
    else if (type.includes('application/json')) throw await errorFrom(response);
    else await pump(response.body, job.playback);
  }

  async function speakWs(job, params) {
    const sock = new NlsSocket('SpeechSynthesizer', {
      onAudio: (buffer) => job.playback.push(new Uint8Array(buffer)),
      // MetaInfo comes once per sentence (NLS: subtitles as they are made): the sentence entry
      // (sentence: true) and its words; the list shows the sentences with their times
      onEvent: (event) => {
        const subs = event.payload?.subtitles;
        if (event.header?.name === 'MetaInfo' && Array.isArray(subs)) {
          const sentences = subs.some((s) => s.sentence) ? subs.filter((s) => s.sentence) : subs;
          subtitles.hidden = false;
          subtitles.append(
            ...sentences.map((s) => el('li', {}, el('span', { class: 'time' }, `${fmtMs(Number(s.begin_time))}–${fmtMs(Number(s.end_time))}`), s.text)),
          );
        }
      },
    });
    job.sock = sock;
    job.taskId = sock.taskId;
    await sock.open();
    const payload = {
      text: params.text,
      voice: params.voice,
      format: params.format,
      sample_rate: params.rate,
      volume: params.volume,
      speech_rate: params.speechRate,
      pitch_rate: params.pitch,
      enable_subtitle: true,
    };
    if (params.instructions) payload.prompt = params.instructions;
    sock.send('StartSynthesis', payload);
    await sock.waitFor('SynthesisCompleted', 600000);
    sock.close();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    stopCurrent();
    clearError(errorBox);
    subtitles.hidden = true;
    subtitles.replaceChildren();
    download.hidden = true;
    const api = apiSel.value;
    const format = formatSel.value;
    const params = {
      text: textBox.value,
      voice: voiceSel.value,
      format,
      rate: api === 'openai' ? OPENAI_PCM_RATE : Number($('#tts-rate').value),
      volume: Number($('#tts-volume').value),
      speechRate: Number($('#tts-speech-rate').value),
      pitch: Number($('#tts-pitch').value),
      speed: Number($('#tts-speed').value),
      sse: $('#tts-sse').checked,
      instructions: $('#tts-instructions').value.trim(),
    };
    audio.pause();
    audio.removeAttribute('src');
    audio.hidden = true;
    const playback = new Playback({ format, sampleRate: params.rate, audio, frames: api === 'ws' });
    const job = { playback, abort: new AbortController(), sock: null, taskId: null };
    job.timer = setInterval(() => renderStats(playback, job.phase), 200);
    current = job;
    stopBtn.disabled = false;
    job.phase = 'synthesising';
    renderStats(playback, job.phase);
    setState(stateLine, 'Synthesising: playback starts with the first audio…');
    try {
      if (api === 'rest') await speakRest(job, params);
      else if (api === 'ws') await speakWs(job, params);
      else await speakOpenai(job, params);
      if (!playback.bytes) throw new ServiceError('The service sent no audio');
      job.phase = 'playing';
      setState(stateLine, `Synthesis complete (${fmtBytes(playback.bytes)}); playing…`);
      download.href = URL.createObjectURL(playback.blob());
      download.download = `tts_${job.taskId || 'console'}.${format}`;
      download.textContent = `Download ${format.toUpperCase()} (${fmtBytes(playback.bytes)})`;
      download.hidden = false;
      await playback.finish();
      if (current !== job) return;
      job.phase = 'done';
      if (playback.mode === 'webaudio') {
        audio.src = URL.createObjectURL(playback.replayBlob());
        audio.hidden = false;
      }
      setState(stateLine, `Played ${fmtMs(playback.duration * 1000)} of audio.`, true);
    } catch (err) {
      if (current !== job) return; // replaced or stopped by the user
      job.phase = 'failed';
      showError(errorBox, err);
      setState(stateLine, playback.bytes ? `Stopped after ${fmtBytes(playback.bytes)} of audio.` : 'Failed.');
      playback.stop();
    } finally {
      if (current === job) {
        renderStats(playback, job.phase);
        clearInterval(job.timer);
        stopBtn.disabled = true;
      }
    }
  });

  stopBtn.addEventListener('click', () => {
    if (!current) return;
    const job = current;
    job.phase = 'stopped';
    renderStats(job.playback, job.phase);
    stopCurrent();
    stopBtn.disabled = true;
    setState(stateLine, 'Stopped.');
  });
}

// Realtime ASR: microphone -> 16 kHz PCM -> NLS WebSocket (SpeechTranscriber); partials and
// sentences as they come, with their times.
import { MicCapture, RATE } from './capture.js';
import { NlsSocket } from './nls.js';
import { events, modelItems, state } from './shared.js';
import { $, clearError, el, fillSelect, fmtMs, logLine, setState, showError } from './ui.js';

export function init() {
  const form = $('#live-form');
  const startBtn = $('#live-start');
  const stopBtn = $('#live-stop');
  const modelSel = $('#live-model');
  const errorBox = $('#live-error');
  const stateLine = $('#live-state');
  const list = $('#live-sentences');
  const partial = $('#live-partial');
  const frames = $('#live-frames');
  const level = $('#live-level');
  const clock = $('#live-clock');
  const settings = [modelSel, $('#live-silence'), $('#live-punc'), $('#live-itn'), $('#live-partials')];

  let mic = null;
  let sock = null;
  let sending = false;
  let pending = [];
  let sentFrames = 0;
  let sentBytes = 0;
  let sentences = 0;
  let stopping = false;

  events.addEventListener('models', () => {
    fillSelect(modelSel, modelItems({ realtime: true }), { placeholder: '(engine default)' });
  });

  // Stop is offered once the session runs: opening the microphone and the connection are
  // bounded by their own timeouts
  function busy(on) {
    startBtn.disabled = on;
    stopBtn.disabled = true;
    for (const input of settings) input.disabled = on;
  }

  function logFrame(direction, text) {
    logLine(frames, `${direction === 'out' ? '→' : '←'} ${text}`);
  }

  function showPartial(payload) {
    if (!$('#live-partials').checked) return;
    partial.hidden = false;
    partial.textContent = `${fmtMs(payload.time)}  ${payload.result ?? ''}`;
    partial.dataset.index = payload.index;
  }

  function onEvent(event) {
    const { name } = event.header || {};
    const p = event.payload || {};
    if (name === 'SentenceBegin') {
      showPartial({ ...p, result: '…' });
    } else if (name === 'TranscriptionResultChanged') {
      showPartial(p);
      partial.dataset.updates = String(Number(partial.dataset.updates || 0) + 1);
    } else if (name === 'SentenceEnd') {
      sentences += 1;
      partial.hidden = true;
      partial.textContent = '';
      const time = el('span', { class: 'time' }, `${fmtMs(p.begin_time)}–${fmtMs(p.time)}`);
      const title = typeof p.confidence === 'number' ? `confidence ${p.confidence.toFixed(2)}` : undefined;
      list.append(el('li', { dataset: { index: p.index, begin: p.begin_time, end: p.time }, title }, time, p.result ?? ''));
    } else if (name === 'TaskFailed') {
      showError(errorBox, sock.failure); // as it comes, even mid-session
    }
  }

  function sendChunk(pcm) {
    if (!sending) {
      pending.push(pcm);
      return;
    }
    sock.sendAudio(pcm.buffer);
    sentFrames += 1;
    sentBytes += pcm.byteLength;
    clock.textContent = fmtMs((sentBytes / 2 / RATE) * 1000);
  }

  function settingsPayload() {
    const payload = {
      format: 'pcm',
      sample_rate: RATE,
      enable_intermediate_result: $('#live-partials').checked,
      enable_punctuation_prediction: $('#live-punc').checked,
      enable_inverse_text_normalization: $('#live-itn').checked,
      max_sentence_silence: Number($('#live-silence').value) || 800,
    };
    if (modelSel.value) payload.customization_id = modelSel.value;
    return payload;
  }

  async function teardown() {
    sending = false;
    pending = [];
    await mic?.stop();
    mic = null;
    sock?.close();
    sock = null;
    level.value = 0;
    busy(false);
    stopping = false;
  }

  async function start() {
    clearError(errorBox);
    busy(true);
    sentFrames = sentBytes = sentences = 0;
    clock.textContent = fmtMs(0);
    setState(stateLine, 'Opening the microphone…');
    mic = new MicCapture({ onChunk: sendChunk, onLevel: (rms) => (level.value = Math.min(1, rms * 4)) });
    try {
      await mic.start();
    } catch (err) {
      showError(errorBox, err);
      setState(stateLine, 'Idle.');
      await teardown();
      return;
    }
    setState(stateLine, 'Connecting…');
    sock = new NlsSocket('SpeechTranscriber', { onEvent, onFrame: logFrame });
    const current = sock;
    try {
      await current.open();
      current.send('StartTranscription', settingsPayload());
      await current.waitFor('TranscriptionStarted', 15000);
    } catch (err) {
      showError(errorBox, err);
      setState(stateLine, 'Idle.');
      await teardown();
      return;
    }
    sending = true;
    for (const pcm of pending.splice(0)) sendChunk(pcm);
    stopBtn.disabled = false;
    setState(stateLine, 'Listening: speak now.');
    current.closed.then(async () => {
      // the server ended the task on its own (TaskFailed, or the connection broke)
      if (sock === current && !stopping) {
        if (current.failure) showError(errorBox, current.failure);
        setState(stateLine, 'Stopped by the service.');
        await teardown();
      }
    });
  }

  async function stop() {
    if (!sending || stopping) return;
    stopping = true;
    stopBtn.disabled = true;
    setState(stateLine, 'Finishing: the end of the audio is being recognised…');
    const current = sock;
    await mic?.stop(); // sends the last partial chunk
    mic = null;
    sending = false;
    try {
      current.send('StopTranscription');
      await current.waitFor('TranscriptionCompleted', 60000);
      setState(stateLine, `Completed: ${sentences} sentence${sentences === 1 ? '' : 's'}, ${fmtMs((sentBytes / 2 / RATE) * 1000)} of audio in ${sentFrames} frames.`, true);
    } catch (err) {
      showError(errorBox, err);
      setState(stateLine, 'Stopped with an error.');
    }
    await teardown();
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    start();
  });
  stopBtn.addEventListener('click', stop);
  $('#live-clear').addEventListener('click', () => {
    list.replaceChildren();
    partial.hidden = true;
    delete partial.dataset.updates;
    frames.textContent = '';
    clearError(errorBox);
  });
  window.addEventListener('pagehide', () => sock?.close());
  if (state.models.length) events.dispatchEvent(new Event('models'));
}

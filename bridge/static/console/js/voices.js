// Voices: the list from the service, cloning from a recorded or uploaded prompt (its transcript
// typed, or recognised by the ASR endpoint), use a voice at once, delete a cloned one.
import { call, callJson } from './api.js';
import { MicCapture, RATE } from './capture.js';
import { recognizeNls } from './file.js';
import { events, loadVoices, serves, state } from './shared.js';
import { $, clearError, el, fmtMs, setState, showError } from './ui.js';
import { wavBlob } from './wav.js';

const MAX_PROMPT_S = 30;

export function init() {
  const panel = $('#panel-voices');
  const form = $('#clone-form');
  const nameInput = $('#clone-name');
  const fileInput = $('#clone-file');
  const recBtn = $('#clone-rec');
  const recStop = $('#clone-rec-stop');
  const recClock = $('#clone-rec-clock');
  const preview = $('#clone-audio');
  const textBox = $('#clone-text');
  const transcribeBtn = $('#clone-transcribe');
  const go = $('#clone-go');
  const errorBox = $('#voices-error');
  const stateLine = $('#voices-state');
  const table = $('#voices-table');

  let prompt = null; // {blob, name}
  let mic = null;
  let recorded = [];

  function setPrompt(blob, name) {
    prompt = blob ? { blob, name } : null;
    preview.hidden = !blob;
    if (blob) preview.src = URL.createObjectURL(blob);
  }

  fileInput.addEventListener('change', () => {
    const file = fileInput.files[0];
    setPrompt(file || null, file?.name);
  });

  async function stopRecording() {
    if (!mic) return;
    const capture = mic;
    mic = null;
    await capture.stop();
    recBtn.disabled = false;
    recStop.disabled = true;
    fileInput.value = '';
    setPrompt(wavBlob(recorded, RATE), 'prompt.wav');
    setState(stateLine, `Recorded ${fmtMs(capture.seconds * 1000)} of prompt audio.`);
  }

  recBtn.addEventListener('click', async () => {
    clearError(errorBox);
    recorded = [];
    const capture = new MicCapture({
      onChunk: (pcm) => {
        recorded.push(pcm);
        recClock.textContent = fmtMs(capture.seconds * 1000);
        if (capture.seconds >= MAX_PROMPT_S) stopRecording();
      },
    });
    try {
      await capture.start();
    } catch (err) {
      showError(errorBox, err);
      return;
    }
    mic = capture;
    recBtn.disabled = true;
    recStop.disabled = false;
    setState(stateLine, `Recording (at most ${MAX_PROMPT_S} s)…`);
  });
  recStop.addEventListener('click', stopRecording);

  transcribeBtn.addEventListener('click', async () => {
    clearError(errorBox);
    if (!prompt) {
      showError(errorBox, 'Record or upload a prompt first.');
      return;
    }
    transcribeBtn.disabled = true;
    setState(stateLine, 'Transcribing the prompt…');
    try {
      const body = await recognizeNls(prompt.blob, { name: prompt.name });
      textBox.value = body.result;
      setState(stateLine, 'Transcript filled in: check it before creating the voice.', true);
    } catch (err) {
      showError(errorBox, err);
      setState(stateLine, '');
    } finally {
      transcribeBtn.disabled = false;
    }
  });

  function useVoice(name) {
    document.dispatchEvent(new CustomEvent('funspeech:use-voice', { detail: name }));
    document.dispatchEvent(new CustomEvent('funspeech:show-tab', { detail: 'tts' }));
  }

  async function deleteVoice(name) {
    if (!window.confirm(`Delete the voice "${name}" everywhere?`)) return;
    clearError(errorBox);
    try {
      await call(`stream/v1/tts/voices/${encodeURIComponent(name)}`, { method: 'DELETE' });
      setState(stateLine, `Voice "${name}" deleted.`, true);
    } catch (err) {
      showError(errorBox, err);
    }
    await loadVoices().catch(() => {});
  }

  function render() {
    const rows = state.voices.map((v) => {
      const details = [v.gender, v.description, v.reference_text && `“${v.reference_text}”`].filter(Boolean).join(' · ');
      const actions = el(
        'td',
        {},
        el('button', { type: 'button', class: 'small', 'aria-label': `Use ${v.name} for text to speech`, text: 'Use', onclick: () => useVoice(v.name) }),
        ' ',
        v.type === 'clone'
          ? el('button', { type: 'button', class: 'small danger', 'aria-label': `Delete ${v.name}`, text: 'Delete', onclick: () => deleteVoice(v.name) })
          : null,
      );
      return el('tr', { dataset: { voice: v.name } }, el('th', { scope: 'row' }, v.name), el('td', {}, v.type || ''), el('td', {}, v.language || ''), el('td', {}, details), actions);
    });
    table.tBodies[0].replaceChildren(...rows);
  }

  events.addEventListener('voices', () => {
    render();
    if (state.voicesError) showError(errorBox, state.voicesError);
  });
  events.addEventListener('service', () => {
    const missing = !serves('tts_voices');
    $('.tts-missing', panel).hidden = !missing;
    go.disabled = missing;
    transcribeBtn.disabled = !serves('asr');
  });
  $('#voices-refresh').addEventListener('click', () => {
    clearError(errorBox);
    loadVoices().catch(() => {});
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError(errorBox);
    if (!prompt) {
      showError(errorBox, 'Record or upload a prompt recording first.');
      return;
    }
    const name = nameInput.value.trim();
    const data = new FormData();
    data.append('name', name);
    if (textBox.value.trim()) data.append('prompt_text', textBox.value.trim());
    data.append('audio', prompt.blob, prompt.name || 'prompt.wav');
    go.disabled = true;
    setState(stateLine, `Creating the voice "${name}"…`);
    try {
      const body = await callJson('stream/v1/tts/voices', { method: 'POST', body: data });
      await loadVoices().catch(() => {});
      setState(stateLine, body.message || `Voice "${name}" created.`, true);
      stateLine.append(' ', el('button', { type: 'button', class: 'small', text: `Use “${name}” now`, onclick: () => useVoice(name) }));
    } catch (err) {
      showError(errorBox, err);
      setState(stateLine, '');
    } finally {
      go.disabled = false;
    }
  });
}

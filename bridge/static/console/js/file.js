// One-shot ASR of a file: NLS POST /stream/v1/asr or OpenAI POST /v1/audio/transcriptions;
// the segments and the JSON the service answered.
import { call, credentials, errorFromBody } from './api.js';
import { events, modelItems } from './shared.js';
import { $, $$, clearError, el, fillSelect, fmtMs, pretty, setState, showError } from './ui.js';

const NLS_FORMATS = ['pcm', 'wav', 'opus', 'speex', 'amr', 'mp3', 'aac', 'm4a', 'flac', 'ogg'];

// NLS one-shot: the file is the body, parameters in the query (docs/rest-api.md)
export async function recognizeNls(blob, { name = '', model, punctuation = true, itn = true, vad = false, language } = {}) {
  const ext = (name.split('.').pop() || '').toLowerCase();
  const response = await call('stream/v1/asr', {
    method: 'POST',
    query: {
      appkey: credentials.appkey(),
      format: NLS_FORMATS.includes(ext) ? ext : undefined,
      customization_id: model,
      enable_punctuation_prediction: punctuation,
      enable_inverse_text_normalization: itn,
      enable_voice_detection: vad || undefined,
      language,
    },
    headers: { 'Content-Type': 'application/octet-stream', Accept: 'application/json' },
    body: blob,
  });
  const body = await response.json();
  if (body.status !== 20000000) throw errorFromBody(body, response.status);
  return body;
}

export function init() {
  const form = $('#file-form');
  const input = $('#file-input');
  const modelSel = $('#file-model');
  const errorBox = $('#file-error');
  const stateLine = $('#file-state');
  const audio = $('#file-audio');
  const table = $('#file-segments');
  const jsonBox = $('#file-json');
  const text = $('#file-text');
  const go = $('#file-go');

  events.addEventListener('models', () => fillSelect(modelSel, modelItems(), { placeholder: '(engine default)' }));

  const api = () => form.elements.api.value;
  const syncApi = () => $$('.nls-only', form).forEach((node) => (node.hidden = api() !== 'nls'));
  form.addEventListener('change', (e) => {
    if (e.target.name === 'api') syncApi();
  });

  input.addEventListener('change', () => {
    const file = input.files[0];
    if (!file) return;
    audio.src = URL.createObjectURL(file);
    audio.hidden = false;
  });

  function render(segments, body, fullText) {
    text.textContent = fullText;
    const rows = segments.map((s, i) =>
      el(
        'tr',
        {},
        el('td', {}, String(i + 1)),
        el('td', { class: 'time' }, fmtMs(s.start * 1000)),
        el('td', { class: 'time' }, fmtMs(s.end * 1000)),
        el('td', {}, s.text),
        el(
          'td',
          {},
          el('button', {
            type: 'button',
            class: 'small',
            'aria-label': `Play segment ${i + 1} from ${fmtMs(s.start * 1000)}`,
            text: 'Play',
            onclick: () => {
              audio.currentTime = s.start;
              audio.play();
            },
          }),
        ),
      ),
    );
    table.tBodies[0].replaceChildren(...rows);
    table.hidden = segments.length === 0;
    jsonBox.textContent = typeof body === 'string' ? body : pretty(body);
    $('#file-json-box').open = true;
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const file = input.files[0];
    if (!file) return;
    clearError(errorBox);
    go.disabled = true;
    const t0 = performance.now();
    setState(stateLine, `Recognising ${file.name}…`);
    try {
      const model = modelSel.value || undefined;
      const language = $('#file-language').value.trim() || undefined;
      let segments;
      let body;
      let fullText;
      if (api() === 'nls') {
        body = await recognizeNls(file, {
          name: file.name,
          model,
          language,
          punctuation: $('#file-punc').checked,
          itn: $('#file-itn').checked,
          vad: $('#file-vad').checked,
        });
        segments = (body.sentences || []).map((s) => ({ start: s.begin_time / 1000, end: s.end_time / 1000, text: s.text }));
        fullText = body.result;
      } else {
        const data = new FormData();
        data.append('file', file, file.name);
        data.append('model', model || 'whisper-1');
        data.append('response_format', 'verbose_json');
        data.append('timestamp_granularities[]', 'segment');
        if (language) data.append('language', language);
        const response = await call('v1/audio/transcriptions', { method: 'POST', body: data, auth: 'openai' });
        body = await response.json();
        segments = (body.segments || []).map((s) => ({ start: s.start, end: s.end, text: s.text }));
        fullText = body.text;
      }
      render(segments, body, fullText);
      const secs = ((performance.now() - t0) / 1000).toFixed(2);
      setState(stateLine, `Done in ${secs} s: ${segments.length} segment${segments.length === 1 ? '' : 's'}.`, true);
    } catch (err) {
      showError(errorBox, err);
      if (err.body) jsonBox.textContent = pretty(err.body);
      setState(stateLine, 'Failed.');
    } finally {
      go.disabled = false;
    }
  });
  syncApi();
}

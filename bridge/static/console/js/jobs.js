// Async long-text TTS (NLS /rest/v1/tts/async): submit, watch each job until it ends, download.
import { apiUrl, call, credentials, errorFrom, errorFromBody } from './api.js';
import { events, serves, voiceItems } from './shared.js';
import { $, clearError, el, fillSelect, fmtMs, setState, showError } from './ui.js';

const POLL_MS = 1000;
const STORE = 'funspeech.console.jobs';
const OK = 20000000;

// The async API carries its credentials in the body / query; the service requires them to be
// present even when it checks nothing.
const appkey = () => credentials.appkey() || 'funspeech-console';
const token = () => credentials.token() || 'funspeech-console';

export function init() {
  const panel = $('#panel-async');
  const form = $('#async-form');
  const textBox = $('#async-text');
  const voiceSel = $('#async-voice');
  const go = $('#async-go');
  const errorBox = $('#async-error');
  const stateLine = $('#async-state');
  const tbody = $('#async-jobs').tBodies[0];
  const jobs = new Map(); // task_id -> {row, submitted, timer, done}

  const count = () => ($('#async-count').textContent = `${textBox.value.length} characters`);
  textBox.addEventListener('input', count);
  count();

  events.addEventListener('voices', () => fillSelect(voiceSel, voiceItems()));
  events.addEventListener('service', () => {
    const missing = !serves('tts_async');
    $('.tts-missing', panel).hidden = !missing;
    go.disabled = missing;
  });
  document.addEventListener('funspeech:use-voice', (e) => {
    if ([...voiceSel.options].some((o) => o.value === e.detail)) voiceSel.value = e.detail;
  });

  function save() {
    const list = [...jobs.entries()].map(([id, job]) => ({ id, submitted: job.submitted, format: job.format }));
    sessionStorage.setItem(STORE, JSON.stringify(list.slice(-20)));
  }

  function addJob(id, submitted, format) {
    const cells = {
      state: el('td', { class: 'job-state' }, 'submitted'),
      progress: el('td', {}, el('progress', { 'aria-label': `Progress of ${id}` })),
      result: el('td', {}),
    };
    const row = el(
      'tr',
      { dataset: { task: id } },
      el('td', { class: 'mono' }, id),
      el('td', {}, new Date(submitted).toLocaleTimeString()),
      cells.state,
      cells.progress,
      cells.result,
    );
    tbody.prepend(row);
    const job = { row, cells, submitted, format, done: false };
    jobs.set(id, job);
    save();
    poll(id);
  }

  function finish(id, job) {
    job.done = true;
    job.row.dataset.done = 'true';
  }

  function showResult(job, data) {
    const address = data.audio_address;
    if (!address) return;
    // a relative address ("/tmp/x") is on this service: keep the page's path prefix
    const url = /^[a-z]+:/i.test(address) ? new URL(address) : apiUrl(address);
    const name = `tts_${data.task_id || 'async'}.${job.format}`;
    const parts = [el('a', { href: url.href, download: name, class: 'button' }, 'Download')];
    if (job.format !== 'pcm') parts.unshift(el('audio', { controls: true, preload: 'none', src: url.href, 'aria-label': `Result of ${data.task_id}` }));
    const sentences = Array.isArray(data.sentences) ? data.sentences : [];
    if (sentences.length) {
      parts.push(
        el(
          'details',
          {},
          el('summary', {}, `${sentences.length} sentence${sentences.length === 1 ? '' : 's'}`),
          el('ol', { class: 'sentences' }, ...sentences.map((s) => el('li', {}, el('span', { class: 'time' }, `${fmtMs(Number(s.begin_time))}–${fmtMs(Number(s.end_time))}`), s.text))),
        ),
      );
    }
    job.cells.result.replaceChildren(...parts);
  }

  async function poll(id) {
    const job = jobs.get(id);
    if (!job || job.done) return;
    let body = null;
    let failure = null;
    try {
      const response = await fetch(apiUrl('rest/v1/tts/async', { appkey: appkey(), token: token(), task_id: id }), { cache: 'no-store' });
      if (!response.ok) failure = await errorFrom(response);
      else body = await response.json();
    } catch (err) {
      failure = err;
    }
    const elapsed = fmtMs(Date.now() - job.submitted);
    if (failure) {
      job.cells.state.textContent = 'error';
      job.cells.progress.textContent = elapsed;
      showError(errorBox, failure);
      finish(id, job);
      return;
    }
    const data = body.data || {};
    const message = body.error_message || '';
    if (body.error_code !== OK) {
      job.cells.state.textContent = `failed: ${body.error_code} ${message}`;
      job.cells.progress.textContent = elapsed;
      showError(errorBox, errorFromBody(body));
      finish(id, job);
      return;
    }
    job.cells.state.textContent = message || 'RUNNING';
    if (data.audio_address) {
      job.cells.progress.replaceChildren(el('progress', { max: 1, value: 1, 'aria-label': `Progress of ${id}` }), ` ${elapsed}`);
      showResult(job, data);
      finish(id, job);
      return;
    }
    const fraction = typeof data.progress === 'number' ? (data.progress > 1 ? data.progress / 100 : data.progress) : null;
    const bar = fraction === null ? el('progress', { 'aria-label': `Progress of ${id}` }) : el('progress', { max: 1, value: fraction, 'aria-label': `Progress of ${id}` });
    job.cells.progress.replaceChildren(bar, ` ${fraction === null ? '' : `${Math.round(fraction * 100)} % · `}${elapsed}`);
    job.timer = setTimeout(() => poll(id), POLL_MS);
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearError(errorBox);
    const format = $('#async-format').value;
    const request = {
      payload: {
        tts_request: {
          voice: voiceSel.value,
          sample_rate: Number($('#async-rate').value),
          format,
          text: textBox.value,
          enable_subtitle: $('#async-subtitles').checked,
        },
        enable_notify: false,
      },
      context: { device_id: 'funspeech-console' },
      header: { appkey: appkey(), token: token() },
    };
    go.disabled = true;
    setState(stateLine, 'Submitting…');
    try {
      const response = await call('rest/v1/tts/async', {
        method: 'POST',
        auth: 'none',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(request),
      });
      const body = await response.json();
      if (body.error_code !== OK || !body.data?.task_id) throw errorFromBody(body, response.status);
      addJob(body.data.task_id, Date.now(), format);
      setState(stateLine, `Job ${body.data.task_id} accepted.`, true);
    } catch (err) {
      showError(errorBox, err);
      setState(stateLine, '');
    } finally {
      go.disabled = !serves('tts_async');
    }
  });

  // jobs submitted earlier in this tab
  try {
    for (const job of JSON.parse(sessionStorage.getItem(STORE) || '[]')) addJob(job.id, job.submitted, job.format);
  } catch {
    sessionStorage.removeItem(STORE);
  }
}

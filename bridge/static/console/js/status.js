// Status: the bridge (/health) and the live engines of each task (/stream/v1/asr/health,
// /stream/v1/tts/health), from the engines' own heartbeats.
import { callJson } from './api.js';
import { serves, serviceReady } from './shared.js';
import { $, clearError, el, showError } from './ui.js';

const EVERY_MS = 2000;
const GOOD = new Set(['ok', 'healthy']);

function badge(status) {
  return el('span', { class: GOOD.has(status) ? 'status-ok' : 'status-bad' }, status ?? 'unknown');
}

function pairs(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function engineTable(title, engines) {
  const head = ['Engine', 'Backend', 'Device', 'Host', 'Models', 'Active / capacity', 'State'];
  const rows = engines.map((e) =>
    el(
      'tr',
      { dataset: { engine: e.id ?? '' } },
      el('th', { scope: 'row', class: 'mono' }, e.id ?? e.url ?? '–'),
      el('td', {}, e.backend ?? ''),
      el('td', {}, e.device ?? ''),
      el('td', {}, e.host ?? ''),
      el('td', {}, (e.models || e.voices || []).join(', ')),
      el(
        'td',
        {},
        el('meter', { min: 0, max: e.capacity || 1, value: e.active ?? 0, 'aria-label': `${e.id} load` }),
        ` ${e.active ?? '?'} / ${e.capacity ?? '?'}`,
      ),
      el('td', {}, e.draining ? 'draining' : e.ok === false ? 'down' : 'serving'),
    ),
  );
  return el(
    'table',
    { class: 'grid' },
    el('caption', {}, title),
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows),
  );
}

function taskSection(label, body) {
  const engines = body.engines || body.replicas || [];
  const details = el('dl', { class: 'stats' });
  const rows = [
    ['Status', badge(body.status)],
    ['Message', body.message ?? ''],
  ];
  if (body.device) rows.push(['Devices', body.device]);
  if (body.loaded_models) rows.push(['Models', body.loaded_models.join(', ') || 'none']);
  if (body.preset_voices) rows.push(['Voices', body.preset_voices.length]);
  if (body.version) rows.push(['Version', body.version]);
  pairs(details, rows);
  return el(
    'section',
    { class: 'task', 'aria-label': `${label} status`, dataset: { task: label } },
    el('h3', {}, label),
    details,
    engines.length ? engineTable(`${label} engines (${engines.length})`, engines) : el('p', { class: 'muted' }, `No ${label} engine is live.`),
  );
}

export function init() {
  const errorBox = $('#status-error');
  const bridge = $('#status-bridge');
  const tasks = $('#status-tasks');
  const auto = $('#status-auto');
  const time = $('#status-time');
  const panel = $('#panel-status');
  let timer = null;
  let running = false;

  async function refresh() {
    if (running) return;
    running = true;
    const problems = [];
    try {
      await serviceReady;
      const wanted = [['ASR', 'stream/v1/asr/health', serves('asr_health')]];
      wanted.push(['TTS', 'stream/v1/tts/health', serves('tts_health')]);
      const [health, ...answers] = await Promise.allSettled([
        callJson('health', { auth: 'none' }),
        ...wanted.map(([, path, on]) => (on ? callJson(path) : Promise.resolve(null))),
      ]);
      if (health.status === 'fulfilled') {
        const h = health.value;
        pairs(bridge, [
          ['Bridge', badge(h.status)],
          ['Version', h.version ?? ''],
          ['NATS', h.nats_connected ? 'connected' : 'not connected'],
          ['Engines', String(h.engines ?? '')],
        ]);
      } else {
        problems.push(`Bridge: ${health.reason.describe?.() ?? health.reason.message}`);
      }
      const sections = [];
      answers.forEach((answer, i) => {
        const [label, , on] = wanted[i];
        if (!on) return;
        if (answer.status === 'fulfilled') sections.push(taskSection(label, answer.value));
        else problems.push(`${label}: ${answer.reason.describe?.() ?? answer.reason.message}`);
      });
      tasks.replaceChildren(...sections);
      if (problems.length) showError(errorBox, problems.join('\n'));
      else clearError(errorBox);
      time.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } finally {
      running = false;
    }
  }

  function schedule() {
    clearInterval(timer);
    timer = null;
    if (auto.checked && !panel.hidden) timer = setInterval(refresh, EVERY_MS);
  }

  $('#status-refresh').addEventListener('click', refresh);
  auto.addEventListener('change', schedule);
  document.addEventListener('funspeech:tab', () => {
    if (!panel.hidden) refresh();
    schedule();
  });
  document.addEventListener('funspeech:credentials', () => {
    if (!panel.hidden) refresh();
  });
  return { refresh };
}

// The console: tabs, the access token, and the panels.
import { credentials, ServiceError } from './api.js';
import * as file from './file.js';
import * as jobs from './jobs.js';
import * as live from './live.js';
import { loadModels, loadService, loadVoices } from './shared.js';
import * as status from './status.js';
import * as tts from './tts.js';
import { $, $$ } from './ui.js';
import * as voices from './voices.js';

// ------------------------------------------------------------------ tabs (WAI-ARIA tabs pattern)
const tabs = $$('[role="tab"]');

function showTab(name, focus = false) {
  const tab = $(`#tab-${name}`) || tabs[0];
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    $(`#${t.getAttribute('aria-controls')}`).hidden = !on;
  }
  if (focus) tab.focus();
  const id = tab.id.replace(/^tab-/, '');
  if (location.hash !== `#${id}`) history.replaceState(null, '', `#${id}`);
  document.dispatchEvent(new CustomEvent('funspeech:tab', { detail: id }));
}

for (const tab of tabs) {
  tab.addEventListener('click', () => showTab(tab.id.replace(/^tab-/, '')));
  tab.addEventListener('keydown', (e) => {
    const i = tabs.indexOf(tab);
    const go = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (go === undefined) return;
    e.preventDefault();
    const next = tabs[(go + tabs.length) % tabs.length];
    showTab(next.id.replace(/^tab-/, ''), true);
  });
}
window.addEventListener('hashchange', () => showTab(location.hash.slice(1)));
document.addEventListener('funspeech:show-tab', (e) => showTab(e.detail, true));

// ------------------------------------------------------------------ access token
const access = $('#access');
const badge = $('#access-state');
const result = $('#access-result');
const tokenInput = $('#token');
const appkeyInput = $('#appkey');
const remember = $('#token-remember');

function fillAccess() {
  tokenInput.value = credentials.token();
  appkeyInput.value = credentials.appkey();
  remember.checked = credentials.remembered();
}

function setBadge(text, kind) {
  badge.textContent = text;
  badge.className = `badge ${kind || ''}`;
}

// Ask the service whether our credentials are good: the model list needs the token when
// APPTOKEN is set (401, NLS 40000001 otherwise).
async function checkAccess() {
  const token = credentials.token();
  try {
    await loadModels();
    setBadge(token ? 'set' : 'not needed', token ? 'set' : '');
    result.textContent = token ? 'The service accepts this token.' : '';
  } catch (err) {
    if (err instanceof ServiceError && err.http === 401) {
      setBadge(token ? 'rejected' : 'required', 'needed');
      access.open = true;
      result.textContent = token ? `The service refused the token: ${err.describe()}` : `This service needs a token: ${err.describe()}`;
    } else {
      result.textContent = `Could not check the token: ${err.describe?.() ?? err.message}`;
    }
  }
}

$('#access-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  credentials.save(tokenInput.value.trim(), appkeyInput.value.trim(), remember.checked);
});
$('#token-forget').addEventListener('click', () => {
  credentials.forget();
  fillAccess();
});
$('#token-show').addEventListener('click', (e) => {
  const show = tokenInput.type === 'password';
  tokenInput.type = show ? 'text' : 'password';
  e.currentTarget.setAttribute('aria-pressed', String(show));
  e.currentTarget.textContent = show ? 'Hide' : 'Show';
  e.currentTarget.setAttribute('aria-label', show ? 'Hide the token' : 'Show the token');
});
document.addEventListener('funspeech:credentials', async () => {
  result.textContent = 'Checking…';
  await checkAccess();
  loadVoices().catch(() => {});
});

// ------------------------------------------------------------------ start
live.init();
file.init();
tts.init();
voices.init();
jobs.init();
status.init();
fillAccess();
showTab(location.hash.slice(1) || 'live');

const service = await loadService();
if (service?.version) $('#service-version').textContent = `v${service.version}`;
await checkAccess();
await loadVoices().catch(() => {});
document.body.dataset.ready = 'true';

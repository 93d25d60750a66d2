// State several panels read: what the service offers, its ASR models and its voices.
import { callJson, ServiceError } from './api.js';

export const events = new EventTarget();
export const state = {
  service: null, // GET / (JSON): version and the endpoints this bridge serves
  models: [],
  modelsError: null,
  voices: [],
  voicesError: null,
};

let serviceLoaded;
// resolves once GET / has been read (or failed): serves() is meaningful from then on
export const serviceReady = new Promise((resolve) => (serviceLoaded = resolve));

export async function loadService() {
  try {
    state.service = await callJson('', { auth: 'none' });
  } catch {
    state.service = null; // an older bridge: assume everything is there
  }
  serviceLoaded();
  events.dispatchEvent(new Event('service'));
  return state.service;
}

// Whether this bridge serves an endpoint (by its name in GET /'s "endpoints").
export function serves(name) {
  const endpoints = state.service?.endpoints;
  return !endpoints || name in endpoints;
}

export async function loadModels() {
  try {
    const body = await callJson('stream/v1/asr/models');
    state.models = body.models || [];
    state.modelsError = null;
  } catch (err) {
    state.models = [];
    state.modelsError = err;
  }
  events.dispatchEvent(new Event('models'));
  if (state.modelsError) throw state.modelsError;
  return state.models;
}

export function modelItems({ realtime = false } = {}) {
  return state.models
    .filter((m) => !realtime || m.supports_realtime)
    .map((m) => ({ value: m.id, label: `${m.name || m.id}${m.default ? ' (default)' : ''}` }));
}

// Voices: /voices/info gives types and details; a bare /voices list is enough otherwise.
export async function loadVoices() {
  if (!serves('tts_voices')) {
    state.voices = [];
    state.voicesError = null;
    events.dispatchEvent(new Event('voices'));
    return state.voices;
  }
  try {
    let voices;
    try {
      const info = await callJson('stream/v1/tts/voices/info');
      const entries = Array.isArray(info.voices) ? info.voices.map((v) => [v.name, v]) : Object.entries(info.voices || {});
      voices = entries.map(([name, v]) => ({ ...v, name: v.name || name }));
    } catch (err) {
      if (!(err instanceof ServiceError) || err.http !== 404) throw err;
      const list = await callJson('stream/v1/tts/voices');
      voices = (list.voices || []).map((name) => (typeof name === 'string' ? { name } : name));
    }
    state.voices = voices;
    state.voicesError = null;
  } catch (err) {
    state.voices = [];
    state.voicesError = err;
  }
  events.dispatchEvent(new Event('voices'));
  if (state.voicesError) throw state.voicesError;
  return state.voices;
}

export function voiceItems() {
  const group = (v) => (v.type === 'clone' ? 'Cloned voices' : v.type ? 'Preset voices' : undefined);
  const items = state.voices.map((v) => ({
    value: v.name,
    label: [v.name, v.language, v.gender].filter(Boolean).join(' · '),
    group: group(v),
  }));
  const order = (item) => ({ 'Preset voices': 0, 'Cloned voices': 2 })[item.group] ?? 1;
  return items.sort((a, b) => order(a) - order(b)); // stable: the service's order within a group
}

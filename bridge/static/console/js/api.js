// URLs of the service (relative to this page, so a path prefix added by a proxy is kept),
// the credentials kept in this browser, and the service's errors as the console shows them.

// The page is served at <prefix>/console/: the API lives at <prefix>/.
export const BASE = new URL('../', document.baseURI);

export function apiUrl(path, query = {}) {
  const url = new URL(path.replace(/^\//, ''), BASE);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
  }
  return url;
}

export function wsUrl(path, query = {}) {
  const url = apiUrl(path, query);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url;
}

// ------------------------------------------------------------------ credentials
// sessionStorage by default (gone when the tab closes), localStorage when the user asks to be
// remembered. Never put in a URL except the WebSocket's token parameter, which NLS defines.
const KEYS = { token: 'funspeech.console.token', appkey: 'funspeech.console.appkey' };

function read(key) {
  return sessionStorage.getItem(key) ?? localStorage.getItem(key) ?? '';
}

export const credentials = {
  token: () => read(KEYS.token),
  appkey: () => read(KEYS.appkey),
  remembered: () => localStorage.getItem(KEYS.token) !== null || localStorage.getItem(KEYS.appkey) !== null,
  save(token, appkey, remember) {
    this.forget(false);
    const store = remember ? localStorage : sessionStorage;
    if (token) store.setItem(KEYS.token, token);
    if (appkey) store.setItem(KEYS.appkey, appkey);
    document.dispatchEvent(new CustomEvent('funspeech:credentials'));
  },
  forget(notify = true) {
    for (const key of Object.values(KEYS)) {
      sessionStorage.removeItem(key);
      localStorage.removeItem(key);
    }
    if (notify) document.dispatchEvent(new CustomEvent('funspeech:credentials'));
  },
};

// Auth headers per API family (docs/rest-api.md, "Authentication").
export function authHeaders(kind) {
  const token = credentials.token();
  if (!token || kind === 'none') return {};
  return kind === 'openai' ? { Authorization: `Bearer ${token}` } : { 'X-NLS-Token': token };
}

// ------------------------------------------------------------------ errors
export class ServiceError extends Error {
  constructor(message, { http = 0, code = '', body = null, requestId = '', kind = '' } = {}) {
    super(message);
    this.name = 'ServiceError';
    this.kind = kind; // e.g. "TaskFailed" for an NLS WebSocket event
    this.http = http;
    this.code = code;
    this.body = body;
    this.requestId = requestId;
  }

  // "HTTP 401 · 40000001 · Gateway:ACCESS_DENIED:…", "TaskFailed · 40000004 · Idle timeout…":
  // what the service said, as it said it
  describe() {
    const parts = [];
    if (this.http) parts.push(`HTTP ${this.http}`);
    if (this.kind) parts.push(this.kind);
    if (this.code !== '' && this.code !== undefined && this.code !== null) parts.push(String(this.code));
    parts.push(this.message);
    return parts.join(' · ');
  }
}

// The error a failed answer carries: NLS envelope, OpenAI error, async TTS envelope, or text.
export function errorFromBody(body, http = 0, text = '', requestId = '') {
  let code = '';
  let message = '';
  if (body && typeof body === 'object') {
    if (body.error && typeof body.error === 'object') {
      message = body.error.message;
      code = body.error.code || body.error.type || '';
    } else if ('error_code' in body) {
      code = body.error_code;
      message = body.error_message;
    } else if ('status' in body && ('message' in body || 'status_text' in body)) {
      code = body.status;
      message = body.message ?? body.status_text;
    } else if (body.detail) {
      message = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
    } else if (body.message) {
      message = body.message;
    }
  }
  if (!message) message = (text || '').trim().slice(0, 500) || 'The service answered with an error';
  return new ServiceError(message, { http, code, body, requestId });
}

export async function errorFrom(response) {
  const text = await response.text().catch(() => '');
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON: the text is the message */
  }
  const requestId = response.headers.get('task_id') || response.headers.get('X-Request-ID') || '';
  return errorFromBody(body, response.status, text || response.statusText, requestId);
}

export function networkError(err) {
  if (err instanceof ServiceError || err?.name === 'AbortError') return err;
  return new ServiceError(`Cannot reach the service: ${err?.message || err}`);
}

// fetch with the auth of an API family; any non-2xx answer becomes a ServiceError.
export async function call(path, { method = 'GET', query = {}, headers = {}, body, auth = 'nls', signal } = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path, query), {
      method,
      headers: { ...authHeaders(auth), ...headers },
      body,
      signal,
      cache: 'no-store',
    });
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function callJson(path, options = {}) {
  const response = await call(path, { ...options, headers: { Accept: 'application/json', ...(options.headers || {}) } });
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new ServiceError(`Expected JSON from ${path}, got: ${text.slice(0, 200)}`, { http: response.status });
  }
}

// 32 lower-case hex digits (NLS message and task ids). crypto.getRandomValues also works on a
// plain-http page, where crypto.randomUUID does not exist.
export function hex32() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

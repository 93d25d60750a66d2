// A client of the NLS WebSocket protocol (docs/nls-websocket.md): JSON directives and events in
// text frames, audio in binary frames, one task per connection.
import { credentials, hex32, ServiceError, wsUrl } from './api.js';

export class NlsSocket {
  // onEvent(event) for every JSON event, onAudio(ArrayBuffer) for binary frames,
  // onFrame(direction, text) for the protocol log.
  constructor(namespace, { onEvent, onAudio, onFrame } = {}) {
    this.namespace = namespace;
    this.taskId = hex32();
    this.onEvent = onEvent;
    this.onAudio = onAudio;
    this.onFrame = onFrame;
    this.waiters = [];
    this.failure = null;
    this.done = false;
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
  }

  open(timeoutMs = 10000) {
    const token = credentials.token();
    const url = wsUrl('ws/v1', token ? { token } : {});
    return new Promise((resolve, reject) => {
      let opened = false;
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.binaryType = 'arraybuffer';
      const timer = setTimeout(() => {
        if (!opened) {
          ws.close();
          reject(new ServiceError(`No WebSocket connection within ${timeoutMs / 1000} s`));
        }
      }, timeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        resolve();
      };
      ws.onmessage = (msg) => this.receive(msg);
      ws.onclose = (ev) => {
        clearTimeout(timer);
        if (!this.done && !this.failure) {
          const why = ev.reason ? `: ${ev.reason}` : '';
          this.failure = new ServiceError(`The connection closed (code ${ev.code}${why}) before the task completed`);
        }
        for (const waiter of this.waiters.splice(0)) waiter.reject(this.failure || new ServiceError('Connection closed'));
        if (!opened) reject(this.failure);
        this.resolveClosed(ev);
      };
    });
  }

  receive(msg) {
    if (typeof msg.data !== 'string') {
      this.onAudio?.(msg.data);
      return;
    }
    this.onFrame?.('in', msg.data);
    let event;
    try {
      event = JSON.parse(msg.data);
    } catch {
      return;
    }
    const header = event.header || {};
    if (/Completed$/.test(header.name || '')) this.done = true; // the server closes next
    if (header.name === 'TaskFailed') {
      this.failure = new ServiceError(header.status_text || header.status_message || 'Task failed', {
        code: header.status,
        body: event,
        kind: 'TaskFailed',
      });
    }
    this.onEvent?.(event);
    for (const waiter of [...this.waiters]) {
      if (header.name === 'TaskFailed') waiter.reject(this.failure);
      else if (waiter.names.includes(header.name)) waiter.resolve(event);
      else continue;
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
    }
  }

  send(name, payload) {
    const frame = {
      header: {
        message_id: hex32(),
        task_id: this.taskId,
        namespace: this.namespace,
        name,
        appkey: credentials.appkey() || 'funspeech-console',
      },
      context: { sdk: { name: 'funspeech-console', language: 'javascript' } },
    };
    if (payload) frame.payload = payload;
    const text = JSON.stringify(frame);
    this.onFrame?.('out', text);
    this.ws.send(text);
  }

  sendAudio(buffer) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(buffer);
  }

  // The next event named one of `names`; TaskFailed or a close rejects with the service's error.
  waitFor(names, timeoutMs = 15000) {
    names = [].concat(names);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const waiter = { names, resolve, reject };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new ServiceError(`No ${names.join(' / ')} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      waiter.resolve = (v) => {
        clearTimeout(timer);
        resolve(v);
      };
      waiter.reject = (e) => {
        clearTimeout(timer);
        reject(e);
      };
      this.waiters.push(waiter);
    });
  }

  // Our own close: not reported as a failure.
  close() {
    this.done = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
  }
}

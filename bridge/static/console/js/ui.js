// Small DOM helpers shared by the panels.
import { ServiceError } from './api.js';

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// el('td', {class: 'time'}, 'text', otherNode)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function describe(err) {
  if (err instanceof ServiceError) return err.describe();
  if (err?.name === 'AbortError') return 'Stopped.';
  return err?.message || String(err);
}

// The alert region of a panel: shown with the service's words, hidden when cleared. The same
// message is not rewritten (a screen reader would announce it again on every refresh).
export function showError(box, err) {
  const text = typeof err === 'string' ? err : describe(err);
  if (box.hidden || box.textContent !== text) box.textContent = text;
  box.hidden = false;
}

export function clearError(box) {
  box.hidden = true;
  box.textContent = '';
}

export function setState(node, text, ok = false) {
  node.textContent = text;
  node.classList.toggle('ok', ok);
}

// 83456 ms -> "1:23.4"
export function fmtMs(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '–';
  const tenths = Math.max(0, Math.round(ms / 100));
  const min = Math.floor(tenths / 600);
  const sec = ((tenths % 600) / 10).toFixed(1).padStart(4, '0');
  return `${min}:${sec}`;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// Append a line to a bounded log <pre>.
export function logLine(pre, line, max = 400) {
  const lines = pre.textContent ? pre.textContent.split('\n') : [];
  lines.push(line);
  pre.textContent = lines.slice(-max).join('\n');
}

// Fill a <select> with options (value/label/group), keeping the current value when it exists.
export function fillSelect(select, items, { keep = true, placeholder } = {}) {
  const previous = select.value;
  select.replaceChildren();
  if (placeholder) select.append(el('option', { value: '' }, placeholder));
  const groups = new Map();
  for (const item of items) {
    const option = el('option', { value: item.value }, item.label ?? item.value);
    if (item.group) {
      if (!groups.has(item.group)) {
        const group = el('optgroup', { label: item.group });
        groups.set(item.group, group);
        select.append(group);
      }
      groups.get(item.group).append(option);
    } else {
      select.append(option);
    }
    if (item.selected) option.selected = true;
  }
  if (keep && previous && items.some((item) => item.value === previous)) select.value = previous;
}

// Shared front-end helpers (JS twin of madopd/widgets/style.py): palettes, scales, token display,
// and a tiny DOM builder. SECURITY: model text is untrusted. It only ever reaches the page through
// `textContent` (h() below never sets innerHTML), so <script>, <img onerror> or unbalanced tags
// stay inert text, and bidi/control characters are shown as visible escapes (visibleText).

export const TEACHER_COLORS = ["#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7",
  "#F0E442", "#000000"];
export const SEQUENTIAL = ["#ffffd9", "#edf8b1", "#c7e9b4", "#7fcdbb", "#41b6c4", "#1d91c0",
  "#225ea8", "#253494", "#081d58"];
export const DIVERGING = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
  "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f"];
export const MISSING_COLOR = "#bdbdbd";
const WS_MARKS = { " ": "·", "\n": "↵", "\t": "⇥", "\r": "␍" };
export const EMPTY_TOKEN = "∅";

export function teacherColor(k) {
  return TEACHER_COLORS[k % TEACHER_COLORS.length];
}

function hexToRgb(h) {
  return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)];
}

function hex2(n) {
  return n.toString(16).padStart(2, "0");
}

export function interp(stops, x) {
  x = Math.min(1, Math.max(0, x));
  const pos = x * (stops.length - 1);
  const i = Math.min(Math.floor(pos), stops.length - 2);
  const f = pos - i;
  const a = hexToRgb(stops[i]), b = hexToRgb(stops[i + 1]);
  return "#" + [0, 1, 2].map((c) => hex2(Math.floor(a[c] + (b[c] - a[c]) * f + 0.5))).join("");
}

function finite(v) {
  return v !== null && v !== undefined && Number.isFinite(v);
}

export function seqColor(v, vmax) {
  if (!finite(v)) return MISSING_COLOR;
  if (vmax <= 0) return SEQUENTIAL[0];
  return interp(SEQUENTIAL, v / vmax);
}

export function divColor(v, vabs) {
  if (!finite(v)) return MISSING_COLOR;
  if (vabs <= 0) return DIVERGING[Math.floor(DIVERGING.length / 2)];
  return interp(DIVERGING, 0.5 + 0.5 * Math.max(-1, Math.min(1, v / vabs)));
}

export function textColor(bg) {
  const [r, g, b] = hexToRgb(bg);
  const lum = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
  return lum > 0.45 ? "#000000" : "#ffffff";
}

// Control (Cc), format (Cf: bidi overrides/isolates/marks U+202A-202E, U+2066-2069, U+200E/F,
// U+061C, ...) and line/paragraph separators never reach the page raw: a right-to-left override
// in model text would make it read reversed. Same rules as style.py:visible_text.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
const INVISIBLE_ALL = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;

export function escapeChar(ch) {
  const c = ch.codePointAt(0);
  if (c < 0x100) return "\\x" + hex2(c);
  return c <= 0xffff ? "\\u" + c.toString(16).padStart(4, "0") : "\\U" + c.toString(16).padStart(8, "0");
}

export function visibleText(s) {
  return String(s).replace(INVISIBLE_ALL, (ch) => (ch === "\n" || ch === "\t" ? ch : escapeChar(ch)));
}

export function tokenSegments(tok) {
  if (tok === "") return [[EMPTY_TOKEN, true]];
  const segs = [];
  for (const ch of tok) {
    let mark, isMark;
    if (ch in WS_MARKS) { mark = WS_MARKS[ch]; isMark = true; }
    else if (INVISIBLE.test(ch)) { mark = escapeChar(ch); isMark = true; }
    else { mark = ch; isMark = false; }
    if (segs.length && segs[segs.length - 1][1] === isMark) segs[segs.length - 1][0] += mark;
    else segs.push([mark, isMark]);
  }
  return segs;
}

export function fmt(v, digits = 3) {
  if (!finite(v)) return "–";
  return Math.abs(v) >= Math.pow(10, -digits) || v === 0 ? v.toFixed(digits) : v.toExponential(1);
}

// h("div", {class: "x", style: {color: "red"}, onclick: fn}, child, "text", ...) -> Element.
// Strings become text nodes: never HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = visibleText(v);
    else el.setAttribute(k, k === "title" ? visibleText(v) : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(visibleText(c)));
  }
  return el;
}

// One token as a span; whitespace marks get the .madopd-ws class (grey italic).
export function tokenSpan(tok, attrs = {}) {
  const span = h("span", { class: "madopd-tok", ...attrs });
  for (const [text, isMark] of tokenSegments(tok)) {
    span.append(isMark ? h("span", { class: "madopd-ws" }, text) : document.createTextNode(text));
  }
  return span;
}

export function legend(title, vmax, signed = false, suffix = null) {
  const stops = signed ? DIVERGING : SEQUENTIAL;
  return h("div", { class: "madopd-legend" },
    h("span", {}, title),
    h("span", {}, signed ? "−" + fmt(vmax) : "0"),
    h("span", { class: "madopd-bar", style: { background: `linear-gradient(to right,${stops.join(",")})` } }),
    h("span", {}, fmt(vmax) + (suffix !== null ? suffix : signed ? "" : " (p99 clip)")));
}

export function teacherLegend(names) {
  return h("div", { class: "madopd-legend" }, names.map((n, k) =>
    h("span", { class: "madopd-chip" },
      h("span", { class: "madopd-swatch", style: { background: teacherColor(k) } }), n)));
}

// A row of labelled range input; onInput(value) is called with a Number.
export function slider(label, { min, max, step, value }, onInput) {
  const out = h("span", { class: "madopd-val" }, fmt(value, 2));
  // data-lm-suppress-shortcuts: JupyterLab (Lumino) would otherwise take the arrow keys for its
  // own shortcuts (move between cells), so a focused slider never moved with the keyboard
  const input = h("input", { type: "range", min, max, step, value, "data-lm-suppress-shortcuts": "true" });
  input.addEventListener("input", () => {
    out.textContent = fmt(Number(input.value), 2);
    onInput(Number(input.value));
  });
  const el = h("label", { class: "madopd-slider" }, label, input, out);
  // Follow a value set from Python (synced trait) without firing onInput again.
  el.setValue = (v) => { input.value = String(v); out.textContent = fmt(Number(v), 2); };
  return el;
}

// Minimap for long sequences: one thin cell per token coloured by `colors[t]`; the visible window
// is outlined; clicking moves the window. Returns {el, update(start)}.
export function minimap(colors, windowSize, onJump) {
  const n = colors.length;
  const canvas = h("canvas", { class: "madopd-minimap", width: Math.max(1, Math.min(n, 1200)), height: 14 });
  let start = 0;
  function draw() {
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    const w = canvas.width, cw = w / n;
    for (let t = 0; t < n; t++) {
      ctx.fillStyle = colors[t];
      ctx.fillRect(Math.floor(t * cw), 0, Math.ceil(cw), 14);
    }
    ctx.strokeStyle = "#d00";
    ctx.lineWidth = 2;
    ctx.strokeRect(start * cw + 1, 1, Math.max(2, windowSize * cw - 2), 12);
  }
  canvas.addEventListener("click", (ev) => {
    const rect = canvas.getBoundingClientRect();
    const t = Math.floor(((ev.clientX - rect.left) / rect.width) * n);
    onJump(Math.max(0, Math.min(n - windowSize, t - Math.floor(windowSize / 2))));
  });
  draw();
  return { el: canvas, update(s) { start = s; draw(); } };
}

// Re-render a widget from scratch when its payload is replaced (the finder switches the lens and the
// decomposition to another sample). Handlers the render registers with model.on are removed first,
// so a re-render never leaves old closures listening.
export function remountOnPayload(render) {
  return ({ model, el, host }) => {
    let handlers = [];
    const scoped = {
      get: (k) => model.get(k), set: (k, v) => model.set(k, v), save_changes: () => model.save_changes(),
      send: (...a) => model.send(...a), off: (e, cb) => model.off(e, cb),
      on: (e, cb) => { handlers.push([e, cb]); model.on(e, cb); },
    };
    const box = document.createElement("div");
    el.append(box);
    const mount = () => {
      for (const [e, cb] of handlers) model.off(e, cb);
      handlers = [];
      box.replaceChildren();
      render({ model: scoped, el: box, host });
    };
    model.on("change:payload", mount);
    mount();
  };
}

// The web console: noVNC on ws/vnc for the screen, xterm.js on ws/console for the serial
// console. Both websocket URLs are relative to the page, so they carry its secret path.
import RFB from './vendor/novnc/core/rfb.js';
import keysyms from './vendor/novnc/core/input/keysymdef.js';

const XK_Shift_L = 0xffe1;
const XK_Return = 0xff0d;
const XK_Tab = 0xff09;
// Characters that need Shift on a US keyboard: QEMU maps a keysym to a key, not to a chord.
const SHIFTED = '~!@#$%^&*()_+{}|:"<>?ABCDEFGHIJKLMNOPQRSTUVWXYZ';

const state = { vnc: 'connecting', console: 'connecting' };
let rfb = null;
let sock = null;

// A token the in-cluster console's sign-in page keeps in sessionStorage travels as a websocket
// subprotocol, as the kube-apiserver accepts it: a browser cannot set Authorization on a websocket.
function wsProtocols() {
  const p = ['binary'];
  const token = window.sessionStorage.getItem('slimvirt-token');
  if (token) {
    let bin = '';
    for (const b of new TextEncoder().encode(token)) bin += String.fromCharCode(b);
    p.push('base64url.bearer.authorization.k8s.io.' + btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''));
  }
  return p;
}

function wsURL(path) {
  const u = new URL(path, window.location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.hash = '';
  return u.href;
}

function showStatus() {
  const el = document.getElementById('status');
  el.textContent = `screen: ${state.vnc} · console: ${state.console}`;
  const ok = state.vnc === 'connected' && state.console === 'connected';
  const bad = state.vnc.startsWith('disconnected') || state.console.startsWith('disconnected');
  el.className = ok ? 'ok' : (bad ? 'bad' : '');
}

function setState(which, s) {
  state[which] = s;
  showStatus();
}

// The screen.
function connectVNC() {
  if (rfb) {
    rfb.disconnect();
  }
  const screen = document.getElementById('screen');
  screen.replaceChildren();
  setState('vnc', 'connecting');
  const r = new RFB(screen, wsURL('ws/vnc'), { wsProtocols: wsProtocols(), shared: true });
  r.scaleViewport = true;
  r.background = '#000';
  r.addEventListener('connect', () => { if (rfb === r) setState('vnc', 'connected'); });
  r.addEventListener('disconnect', (e) => {
    if (rfb === r) setState('vnc', e.detail.clean ? 'disconnected' : 'disconnected (error)');
  });
  r.addEventListener('securityfailure', (e) => setState('vnc', `security failure: ${e.detail.reason || e.detail.status}`));
  r.addEventListener('desktopname', (e) => { document.getElementById('screen').title = e.detail.name; });
  rfb = r;
}

function typeText(text) {
  if (!rfb || state.vnc !== 'connected') {
    return;
  }
  for (const ch of text) {
    let keysym;
    if (ch === '\n' || ch === '\r') {
      keysym = XK_Return;
    } else if (ch === '\t') {
      keysym = XK_Tab;
    } else {
      keysym = keysyms.lookup(ch.codePointAt(0));
    }
    const shift = SHIFTED.includes(ch);
    if (shift) rfb.sendKey(XK_Shift_L, 'ShiftLeft', true);
    rfb.sendKey(keysym, null);
    if (shift) rfb.sendKey(XK_Shift_L, 'ShiftLeft', false);
  }
}

// The serial console.
const term = new window.Terminal({ scrollback: 5000, cursorBlink: true, convertEol: false,
  fontFamily: 'monospace', fontSize: 14 });
const fit = new window.FitAddon.FitAddon();
term.loadAddon(fit);
const encoder = new TextEncoder();
term.onData((s) => { if (sock && sock.readyState === WebSocket.OPEN) sock.send(encoder.encode(s)); });
term.onBinary((s) => {
  if (sock && sock.readyState === WebSocket.OPEN) {
    sock.send(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff));
  }
});

function connectConsole() {
  if (sock) {
    sock.onclose = null;
    sock.close();
  }
  setState('console', 'connecting');
  const s = new WebSocket(wsURL('ws/console'), wsProtocols());
  s.binaryType = 'arraybuffer';
  s.onopen = () => setState('console', 'connected');
  s.onmessage = (e) => {
    if (e.data instanceof ArrayBuffer) {
      term.write(new Uint8Array(e.data));
    }
  };
  s.onclose = (e) => {
    // The server says why it ended a stream it could not open (forbidden, not found) in the reason.
    const why = e.reason ? `: ${e.reason}` : '';
    setState('console', (e.wasClean ? 'disconnected' : 'disconnected (error)') + why);
  };
  sock = s;
}

function terminalText() {
  const buf = term.buffer.active;
  const lines = [];
  for (let i = 0; i < buf.length; i++) {
    const line = buf.getLine(i);
    if (!line) continue;
    const text = line.translateToString(true);
    if (line.isWrapped && lines.length > 0) {
      lines[lines.length - 1] += text;
    } else {
      lines.push(text);
    }
  }
  return lines.join('\n');
}

// Tabs: both stay laid out (hidden, not removed), so noVNC and xterm.js keep their sizes.
function showTab(name) {
  for (const t of ['screen', 'console']) {
    document.getElementById(`${t}-tab`).classList.toggle('hidden', t !== name);
    document.getElementById(`tab-${t}`).classList.toggle('active', t === name);
  }
  if (name === 'console') {
    fit.fit();
    term.focus();
  } else if (rfb) {
    rfb.focus();
  }
}

term.open(document.getElementById('terminal'));
fit.fit();
new ResizeObserver(() => fit.fit()).observe(document.getElementById('terminal'));
for (const b of document.querySelectorAll('nav button')) {
  b.addEventListener('click', () => showTab(b.dataset.tab));
}
document.getElementById('ctrl-alt-del').addEventListener('click', () => { if (rfb) rfb.sendCtrlAltDel(); });
const paste = document.getElementById('paste');
const sendPaste = () => { typeText(paste.value); paste.value = ''; };
document.getElementById('paste-send').addEventListener('click', sendPaste);
paste.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); typeText(paste.value + '\n'); paste.value = ''; } });
document.getElementById('reconnect').addEventListener('click', () => { connectVNC(); connectConsole(); });

// Hooks for tests and for people in the devtools.
window.slimvirt = {
  terminalText,
  typeText,
  showTab,
  get vncConnected() { return state.vnc === 'connected'; },
  get consoleConnected() { return state.console === 'connected'; },
  screenCanvas() { return document.querySelector('#screen canvas'); },
};

showTab(window.location.hash === '#console' ? 'console' : 'screen');
connectVNC();
connectConsole();

// The sign-in page and a namespace's VMI list. The token lives in sessionStorage only (this
// tab, until it closes); the console page's script finds it there for its websockets. Without
// a token the requests go out bare, for a proxy in front that adds the user's Authorization.
const TOKEN_KEY = 'slimvirt-token';
const NS_KEY = 'slimvirt-namespace';

const $ = (id) => document.getElementById(id);
const show = (id, on) => $(id).classList.toggle('hidden', !on);

function showError(msg) {
  $('error').textContent = msg || '';
  show('error', Boolean(msg));
}

function namespace() {
  return new URLSearchParams(window.location.search).get('namespace') ||
    window.sessionStorage.getItem(NS_KEY) || 'default';
}

function signedOut(msg) {
  show('list', false);
  show('ns-form', false);
  show('sign-out', false);
  show('sign-in', true);
  $('signin-namespace').value = namespace();
  showError(msg);
}

function vmiLink(ns, name, hash, text) {
  const a = document.createElement('a');
  a.href = `vmis/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/${hash}`;
  a.textContent = text;
  return a;
}

function render(list) {
  const body = $('vmis');
  body.replaceChildren();
  for (const v of list.items) {
    const tr = document.createElement('tr');
    for (const text of [v.name, v.phase, v.node || '']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const links = document.createElement('td');
    links.append(vmiLink(list.namespace, v.name, '', 'Screen'), vmiLink(list.namespace, v.name, '#console', 'Console'));
    tr.append(links);
    body.append(tr);
  }
  $('list-title').textContent = `VMIs in ${list.namespace}`;
  show('empty', list.items.length === 0);
  show('truncated', Boolean(list.truncated));
}

// Only the latest load's answer counts: the page's first load goes out without a token, and its
// 401 may arrive after the user has signed in; acted on, it would sign the new token out.
let loads = 0;

async function load(ns) {
  const mine = ++loads;
  const headers = {};
  const token = window.sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(`api/namespaces/${encodeURIComponent(ns)}/virtualmachineinstances`, { headers, cache: 'no-store' });
  } catch (e) {
    if (mine === loads) showError(`The web console did not answer: ${e.message}`);
    return;
  }
  const body = await resp.json().catch(() => ({ error: resp.statusText }));
  if (mine !== loads) {
    return;
  }
  if (resp.status === 401) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    signedOut(token ? `Signed out: ${body.error}` : '');
    return;
  }
  window.sessionStorage.setItem(NS_KEY, ns);
  $('namespace').value = ns;
  show('sign-in', false);
  show('ns-form', true);
  show('sign-out', Boolean(token));
  if (!resp.ok) {
    show('list', false);
    showError(`${resp.status} ${body.error}`);
    return;
  }
  showError('');
  render(body);
  show('list', true);
}

function signIn(token, ns) {
  window.sessionStorage.setItem(TOKEN_KEY, token.trim());
  return load(ns.trim());
}

$('sign-in').addEventListener('submit', (e) => {
  e.preventDefault();
  const t = $('token');
  const token = t.value;
  t.value = '';
  signIn(token, $('signin-namespace').value);
});
$('ns-form').addEventListener('submit', (e) => {
  e.preventDefault();
  load($('namespace').value.trim());
});
$('sign-out').addEventListener('click', () => {
  window.sessionStorage.removeItem(TOKEN_KEY);
  signedOut('');
});

// Hooks for tests.
window.slimvirtHome = {
  signIn,
  rows() { return [...$('vmis').querySelectorAll('tr')].map((tr) => [...tr.cells].slice(0, 3).map((td) => td.textContent)); },
  error() { return $('error').textContent; },
  listShown() { return !$('list').classList.contains('hidden'); },
};

load(namespace());

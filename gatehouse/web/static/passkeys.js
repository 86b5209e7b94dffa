// Passkeys in the app's pages: "Add a passkey" on the account page, "Sign in with a passkey" on
// the log-in page. The server's options and the browser's answers travel as JSON with base64url
// bytes, as WebAuthn's JSON forms have them. Buttons stay hidden where the browser has no WebAuthn.
(() => {
  const root = document.querySelector('[data-passkeys]');
  if (!root || !window.PublicKeyCredential) return;
  const csrf = root.dataset.csrf;
  const status = document.getElementById('passkey-status');
  const bytes = (text) => Uint8Array.from(atob(text.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0));
  const text = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const say = (message) => { status.textContent = message; status.hidden = false; };

  async function post(url, body) {
    const response = await fetch(url, {
      method: 'POST', credentials: 'same-origin', body: JSON.stringify(body),
      headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || 'Something went wrong; try again.');
    return data;
  }

  function answer(credential) {
    const r = credential.response;
    const response = {clientDataJSON: text(r.clientDataJSON)};
    if (r.attestationObject) {
      response.attestationObject = text(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = text(r.authenticatorData);
      response.signature = text(r.signature);
      response.userHandle = r.userHandle ? text(r.userHandle) : null;
    }
    return {id: credential.id, rawId: text(credential.rawId), type: credential.type, response,
            clientExtensionResults: credential.getClientExtensionResults()};
  }

  async function register() {
    const started = await post('/account/passkeys/options', {});
    const o = started.options;
    const publicKey = {...o, challenge: bytes(o.challenge), user: {...o.user, id: bytes(o.user.id)},
                       excludeCredentials: (o.excludeCredentials || []).map((c) => ({...c, id: bytes(c.id)}))};
    const credential = await navigator.credentials.create({publicKey});
    await post('/account/passkeys/verify', {challenge_id: started.challenge_id, credential: answer(credential)});
    window.location.assign('/account?changed=passkeys');
  }

  async function signIn() {
    const started = await post('/login/passkey/options', {});
    const o = started.options;
    const publicKey = {...o, challenge: bytes(o.challenge),
                       allowCredentials: (o.allowCredentials || []).map((c) => ({...c, id: bytes(c.id)}))};
    const credential = await navigator.credentials.get({publicKey});
    const done = await post('/login/passkey/verify', {challenge_id: started.challenge_id, credential: answer(credential)});
    window.location.assign(done.redirect);
  }

  for (const button of root.querySelectorAll('button[data-passkey]')) {
    button.hidden = false;
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await (button.dataset.passkey === 'register' ? register() : signIn());
      } catch (error) {
        say(error.name === 'NotAllowedError' ? 'The passkey was not used.' : error.message);
      } finally {
        button.disabled = false;
      }
    });
  }
})();

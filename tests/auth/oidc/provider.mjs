// A real OpenID Connect provider for the tests: node-oidc-provider (a certified implementation)
// on 127.0.0.1, with its development log-in and consent pages.
//
//   node provider.mjs PORT CLIENTS_JSON
//
// CLIENTS_JSON: the registered clients, e.g. [{"client_id": "gatehouse", "client_secret": "...",
// "redirect_uris": ["http://127.0.0.1:8000/auth/v1/callback"]}].
//
// Who signs in is decided by the log-in name typed on the provider's page:
//   alice@example.com              email alice@example.com, verified
//   unverified:bob@example.com     email bob@example.com, email_verified false
//   noemail:carol                  no email at all
// The subject (sub) is the log-in name itself. Prints "listening" once it accepts requests.
import Provider from 'oidc-provider';

const [port, clientsJson] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

function account(login) {
  let email = login;
  let verified = true;
  if (login.startsWith('unverified:')) {
    email = login.slice('unverified:'.length);
    verified = false;
  } else if (login.startsWith('noemail:')) {
    email = null;
  }
  const name = (email || login).split(/[@:]/)[0];
  return {
    accountId: login,
    async claims() {
      const claims = { sub: login, name: `Test ${name}`, preferred_username: name, picture: `https://example.com/${name}.png` };
      if (email) {
        claims.email = email;
        claims.email_verified = verified;
      }
      return claims;
    },
  };
}

const provider = new Provider(issuer, {
  clients: JSON.parse(clientsJson),
  async findAccount(ctx, id) {
    return account(id);
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'picture', 'preferred_username'],
  },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  cookies: { keys: ['gatehouse-test-provider-cookie-key'] },
});
provider.proxy = false;

provider.listen(Number(port), '127.0.0.1', () => {
  console.log('listening');
});

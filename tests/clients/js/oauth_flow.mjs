// The unmodified supabase-js client signing in with a provider, PKCE flow, against Gatehouse.
//
//   node oauth_flow.mjs <gatehouse-url> <publishable-key> <provider> <redirect-to>
//
// 1. signInWithOAuth({ provider, options: { redirectTo, skipBrowserRedirect: true } }) with the
//    client's own PKCE storage; prints {"step": "url", "url": ...}: the URL a browser would open.
// 2. Reads one line from stdin: the URL the browser came back to (redirect_to?code=...), as the
//    test's browser stand-in got it after the provider's pages.
// 3. exchangeCodeForSession(code), getUser, getUserIdentities, refreshSession; prints each step.
//
// Any failed expectation throws, so the exit code is non-zero.

import { createInterface } from 'node:readline'
import { createClient } from '@supabase/supabase-js'

const [url, key, provider, redirectTo] = process.argv.slice(2)
if (!url || !key || !provider || !redirectTo) {
  console.error('usage: node oauth_flow.mjs <gatehouse-url> <publishable-key> <provider> <redirect-to>')
  process.exit(2)
}

function step(name, detail = {}) {
  console.log(JSON.stringify({ step: name, ok: true, ...detail }))
}

function check(condition, message, detail) {
  if (!condition) throw new Error(`${message}${detail === undefined ? '' : `\n${JSON.stringify(detail, null, 2)}`}`)
}

const memory = new Map()
const storage = {
  getItem: (k) => memory.get(k) ?? null,
  setItem: (k, v) => { memory.set(k, v) },
  removeItem: (k) => { memory.delete(k) },
}
const supabase = createClient(url, key, {
  auth: { flowType: 'pkce', storage, persistSession: true, autoRefreshToken: false, detectSessionInUrl: false },
})

const started = await supabase.auth.signInWithOAuth({
  provider, options: { redirectTo, skipBrowserRedirect: true, queryParams: { prompt: 'consent' } },
})
check(!started.error, 'signInWithOAuth returned an error', started.error)
const authorize = new URL(started.data.url)
check(authorize.pathname.endsWith('/auth/v1/authorize'), 'signInWithOAuth built another URL', started.data.url)
check(authorize.searchParams.get('code_challenge_method') === 's256', 'no PKCE challenge', started.data.url)
step('url', { url: started.data.url })

const lines = createInterface({ input: process.stdin })
const back = await new Promise((resolve) => lines.once('line', resolve))
lines.close()
const code = new URL(back).searchParams.get('code')
check(code, 'the browser came back without a code', back)

const exchanged = await supabase.auth.exchangeCodeForSession(code)
check(!exchanged.error, 'exchangeCodeForSession returned an error', exchanged.error)
check(exchanged.data.session?.access_token, 'no session', exchanged.data)
check(exchanged.data.session.provider_token, 'no provider_token in the session', exchanged.data.session)
step('exchanged', { email: exchanged.data.user.email })

const user = await supabase.auth.getUser()
check(!user.error && user.data.user.id === exchanged.data.user.id, 'getUser disagrees', user)
const identities = await supabase.auth.getUserIdentities()
check(!identities.error, 'getUserIdentities returned an error', identities.error)
check(identities.data.identities.map((i) => i.provider).join() === provider, 'identities', identities.data)
step('identities', { providers: identities.data.identities.map((i) => i.provider) })

const refreshed = await supabase.auth.refreshSession()
check(!refreshed.error && refreshed.data.session, 'refreshSession failed', refreshed.error)
const settings = await (await fetch(`${url}/auth/v1/settings`, { headers: { apikey: key } })).json()
check(settings.external[provider] === true, '/settings does not list the provider', settings)
step('done')

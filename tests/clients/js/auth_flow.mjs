// Drives the unmodified official supabase-js client through the tutorial's auth flow against a
// running Gatehouse: sign up, confirm from the development inbox, read the user, refresh, sign
// out, sign in, a wrong password, and a password-reset email.
//
//   node auth_flow.mjs <gatehouse-url> <publishable-key>
//   (or GATEHOUSE_URL / GATEHOUSE_PUBLISHABLE_KEY in the environment)
//
// Prints one JSON line per step on stdout; any failed expectation throws, so the exit code is
// non-zero. Nothing here works around the server: every check is what the client expects of
// GoTrue.

import { createClient } from '@supabase/supabase-js'

const url = (process.argv[2] ?? process.env.GATEHOUSE_URL ?? '').replace(/\/+$/, '')
const key = process.argv[3] ?? process.env.GATEHOUSE_PUBLISHABLE_KEY ?? ''
if (!url || !key) {
  console.error('usage: node auth_flow.mjs <gatehouse-url> <publishable-key>')
  process.exit(2)
}

const email = `js-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`
const password = 'correct-horse-battery-staple-42'
const fullName = 'Ada Lovelace'

function step(name, detail = {}) {
  console.log(JSON.stringify({ step: name, ok: true, ...detail }))
}

class CheckFailed extends Error {}

function check(condition, message, detail) {
  if (!condition) {
    const suffix = detail === undefined ? '' : `\n${JSON.stringify(detail, errorReplacer, 2)}`
    throw new CheckFailed(`${message}${suffix}`)
  }
}

// AuthError's own fields (name, message, status, code) are not all enumerable.
function errorReplacer(_key, value) {
  if (value instanceof Error) {
    return { name: value.name, message: value.message, status: value.status, code: value.code, ...value }
  }
  return value
}

function expectNoError(what, result) {
  check(!result.error, `${what} returned an error`, { error: result.error, data: result.data })
  return result.data
}

/** The development inbox's messages for `to`, newest first. */
async function inbox(to) {
  const response = await fetch(`${url}/_inbox/messages?to=${encodeURIComponent(to)}`)
  const body = await response.text()
  check(response.status === 200, `GET /_inbox/messages answered ${response.status}`, body)
  const parsed = JSON.parse(body)
  check(Array.isArray(parsed.messages), 'GET /_inbox/messages has no "messages" list', parsed)
  return parsed.messages
}

/** Wait (briefly) until the inbox holds at least `count` messages for `to`. */
async function waitForMessages(to, count) {
  const deadline = Date.now() + 10_000
  for (;;) {
    const messages = await inbox(to)
    if (messages.length >= count || Date.now() > deadline) return messages
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

function tokenHashFrom(text) {
  const match = /[?&]token_hash=([^&\s"'<>]+)/.exec(text ?? '')
  check(match, 'no token_hash=... in the message text', text)
  return decodeURIComponent(match[1])
}

/** POST /auth/v1/token?grant_type=refresh_token by hand: the raw status and body. */
async function rawRefresh(refreshToken) {
  const response = await fetch(`${url}/auth/v1/token?grant_type=refresh_token`, {
    method: 'POST',
    headers: { apikey: key, 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: refreshToken }),
  })
  const text = await response.text()
  let body
  try {
    body = JSON.parse(text)
  } catch {
    body = text
  }
  return { status: response.status, body }
}

const supabase = createClient(url, key, { auth: { persistSession: false, autoRefreshToken: false } })

// 1. Sign up: email confirmation is on, so a user and no session.
const signUp = expectNoError(
  'auth.signUp',
  await supabase.auth.signUp({ email, password, options: { data: { full_name: fullName } } }),
)
check(signUp.user, 'auth.signUp returned no user', signUp)
check(signUp.session === null, 'auth.signUp returned a session although email confirmation is on', signUp)
check(signUp.user.email === email, 'auth.signUp: wrong email on the user', signUp.user)
check(
  signUp.user.user_metadata?.full_name === fullName,
  'auth.signUp: full_name missing from user_metadata',
  signUp.user,
)
const userId = signUp.user.id
step('signUp', { email, user_id: userId })

// 2. The confirmation email in the development inbox.
const confirmations = await waitForMessages(email, 1)
check(confirmations.length >= 1, `no message for ${email} in the inbox`, confirmations)
const confirmation = confirmations[0]
check(confirmation.to === email, 'newest inbox message is for someone else', confirmation)
check(/[?&]type=email(&|\s|$)/.test(confirmation.text), 'confirmation link has no type=email', confirmation.text)
const confirmHash = tokenHashFrom(confirmation.text)
step('inbox.confirmation', { message_id: confirmation.id, kind: confirmation.kind, subject: confirmation.subject })

// 3. Confirm with the token hash: a session.
const verified = expectNoError(
  'auth.verifyOtp',
  await supabase.auth.verifyOtp({ token_hash: confirmHash, type: 'email' }),
)
check(verified.session?.access_token, 'auth.verifyOtp returned no session', verified)
check(verified.session.refresh_token, 'auth.verifyOtp: session has no refresh token', verified.session)
check(verified.user?.id === userId, 'auth.verifyOtp: session is for another user', verified.user)
const firstRefreshToken = verified.session.refresh_token
step('verifyOtp', { user_id: verified.user.id, expires_in: verified.session.expires_in })

// 4. The signed-in user, from GET /user.
const current = expectNoError('auth.getUser', await supabase.auth.getUser())
check(current.user?.id === userId, 'auth.getUser: another user', current.user)
check(
  current.user.user_metadata?.full_name === fullName,
  'auth.getUser: full_name missing from user_metadata',
  current.user,
)
check(current.user.email_confirmed_at, 'auth.getUser: email_confirmed_at not set after confirmation', current.user)
step('getUser', { user_id: current.user.id, full_name: current.user.user_metadata.full_name })

// 5. Refresh: a new, different refresh token.
const refreshed = expectNoError('auth.refreshSession', await supabase.auth.refreshSession())
check(refreshed.session?.access_token, 'auth.refreshSession returned no session', refreshed)
check(refreshed.session.refresh_token, 'auth.refreshSession: no refresh token', refreshed.session)
check(
  refreshed.session.refresh_token !== firstRefreshToken,
  'auth.refreshSession returned the same refresh token (no rotation)',
  refreshed.session,
)
check(refreshed.user?.id === userId, 'auth.refreshSession: another user', refreshed.user)
const secondRefreshToken = refreshed.session.refresh_token
step('refreshSession', { rotated: true })

// 6. Sign out everywhere; the refresh tokens are refused afterwards.
const signOut = await supabase.auth.signOut()
check(!signOut.error, 'auth.signOut returned an error', signOut)
const { data: afterSignOut } = await supabase.auth.getSession()
check(afterSignOut.session === null, 'auth.signOut left a session in the client', afterSignOut)
step('signOut', { scope: 'global' })

for (const [which, token] of [['pre-refresh', firstRefreshToken], ['post-refresh', secondRefreshToken]]) {
  const raw = await rawRefresh(token)
  check(raw.status === 400, `refresh with the ${which} refresh token after global sign-out: expected 400`, raw)
  step('refreshAfterSignOut', {
    token: which,
    status: raw.status,
    error_code: raw.body?.error_code ?? raw.body?.code,
    message: raw.body?.msg ?? raw.body?.message,
  })
}

// 7. Sign in with the password.
const signedIn = expectNoError(
  'auth.signInWithPassword',
  await supabase.auth.signInWithPassword({ email, password }),
)
check(signedIn.session?.access_token, 'auth.signInWithPassword returned no session', signedIn)
check(signedIn.user?.id === userId, 'auth.signInWithPassword: another user', signedIn.user)
step('signInWithPassword', { user_id: signedIn.user.id })

// 8. A wrong password: invalid_credentials, 400.
const wrong = await supabase.auth.signInWithPassword({ email, password: `${password}-wrong` })
check(wrong.error, 'auth.signInWithPassword with a wrong password returned no error', wrong)
check(wrong.error.code === 'invalid_credentials', 'wrong password: error.code is not invalid_credentials', wrong.error)
check(wrong.error.status === 400, 'wrong password: error.status is not 400', wrong.error)
check(wrong.data?.session == null, 'wrong password: a session was returned', wrong.data)
step('signInWithPassword.wrongPassword', { code: wrong.error.code, status: wrong.error.status, name: wrong.error.name })

// 9. Password reset: no error, and a second message (the recovery link) in the inbox.
const reset = await supabase.auth.resetPasswordForEmail(email)
check(!reset.error, 'auth.resetPasswordForEmail returned an error', reset)
step('resetPasswordForEmail')

const afterReset = await waitForMessages(email, 2)
check(afterReset.length >= 2, `expected a second message for ${email} after resetPasswordForEmail`, afterReset)
const recovery = afterReset[0]
check(recovery.id !== confirmation.id, 'newest message is still the confirmation', afterReset)
check(/[?&]type=recovery(&|\s|$)/.test(recovery.text), 'recovery message text has no type=recovery', recovery.text)
tokenHashFrom(recovery.text)
step('inbox.recovery', {
  message_id: recovery.id,
  kind: recovery.kind,
  subject: recovery.subject,
  count: afterReset.length,
})

step('done')

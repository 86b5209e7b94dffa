// The unmodified supabase-js client with second factors and anonymous sign-ins, against Gatehouse.
//
//   node mfa_flow.mjs <gatehouse-url> <publishable-key> <email> <password>
//
// The user must exist and be confirmed; the server must allow anonymous sign-ins. TOTP codes come
// from the otpauth package, as an authenticator app would compute them. Prints one JSON line per
// step; any failed expectation throws, so the exit code is non-zero.

import { createClient } from '@supabase/supabase-js'
import * as OTPAuth from 'otpauth'

const [url, key, email, password] = process.argv.slice(2)
if (!url || !key || !email || !password) {
  console.error('usage: node mfa_flow.mjs <gatehouse-url> <publishable-key> <email> <password>')
  process.exit(2)
}

function step(name, detail = {}) {
  console.log(JSON.stringify({ step: name, ok: true, ...detail }))
}

function check(condition, message, detail) {
  if (!condition) throw new Error(`${message}${detail === undefined ? '' : `\n${JSON.stringify(detail, null, 2)}`}`)
}

function client() {
  const memory = new Map()
  return createClient(url, key, {
    auth: {
      storage: { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v), removeItem: (k) => memory.delete(k) },
      persistSession: true, autoRefreshToken: false, detectSessionInUrl: false,
    },
  })
}

const supabase = client()
const signedIn = await supabase.auth.signInWithPassword({ email, password })
check(!signedIn.error, 'signInWithPassword failed', signedIn.error)
let level = await supabase.auth.mfa.getAuthenticatorAssuranceLevel()
check(level.data.currentLevel === 'aal1' && level.data.nextLevel === 'aal1', 'aal before enrolling', level.data)
step('signed in')

const enrolled = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'js phone' })
check(!enrolled.error, 'enroll failed', enrolled.error)
check(enrolled.data.totp.qr_code.startsWith('data:image/svg+xml;utf-8,<svg'), 'qr code', enrolled.data.totp.qr_code.slice(0, 60))
const totp = OTPAuth.URI.parse(enrolled.data.totp.uri)
check(totp.secret.base32 === enrolled.data.totp.secret, 'the URI carries the secret', enrolled.data.totp.uri)
step('enrolled', { factor: enrolled.data.id })

const verified = await supabase.auth.mfa.challengeAndVerify({ factorId: enrolled.data.id, code: totp.generate() })
check(!verified.error, 'challengeAndVerify failed', verified.error)
level = await supabase.auth.mfa.getAuthenticatorAssuranceLevel()
check(level.data.currentLevel === 'aal2' && level.data.nextLevel === 'aal2', 'aal after verifying', level.data)
check(level.data.currentAuthenticationMethods[0].method === 'totp', 'amr', level.data.currentAuthenticationMethods)
const factors = await supabase.auth.mfa.listFactors()
check(factors.data.totp.length === 1 && factors.data.totp[0].id === enrolled.data.id, 'listFactors', factors.data)
step('verified')

const replay = await supabase.auth.mfa.challengeAndVerify({ factorId: enrolled.data.id, code: totp.generate() })
check(replay.error?.code === 'mfa_verification_failed', 'a code works once', replay.error)
step('replay refused')

const removed = await supabase.auth.mfa.unenroll({ factorId: enrolled.data.id })
check(!removed.error, 'unenroll failed', removed.error)
const none = await supabase.auth.mfa.listFactors()
check(none.data.all.length === 0, 'no factors left', none.data)
step('unenrolled')

const guest = client()
const anonymous = await guest.auth.signInAnonymously({ options: { data: { theme: 'dark' } } })
check(!anonymous.error, 'signInAnonymously failed', anonymous.error)
check(anonymous.data.user.is_anonymous === true, 'is_anonymous', anonymous.data.user)
check(anonymous.data.user.user_metadata.theme === 'dark', 'metadata', anonymous.data.user)
const payload = JSON.parse(Buffer.from(anonymous.data.session.access_token.split('.')[1], 'base64url').toString())
check(payload.is_anonymous === true && payload.role === 'authenticated', 'token claims', payload)
step('done')

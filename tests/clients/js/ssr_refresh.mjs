// Server-rendered pages with @supabase/ssr, unmodified, against a running Gatehouse: a render that
// refreshes the session but cannot store the new cookies (a Server Component, a lost response)
// leaves the browser with the parent refresh token, and the next render must still find the user.
// A token older than the parent still ends the session (reuse detection).
//
//   node ssr_refresh.mjs <gatehouse-url> <publishable-key> <email> <password>
//
// Run by tests/clients/test_js_client.py on a server whose access tokens live less than the
// client's refresh margin, so every render refreshes, and whose reuse interval is 0.

import { createServerClient } from '@supabase/ssr'

const [url, key, email, password] = process.argv.slice(2)
if (!url || !key || !email || !password) {
  console.error('usage: node ssr_refresh.mjs <gatehouse-url> <publishable-key> <email> <password>')
  process.exit(2)
}

function step(name, detail = {}) {
  console.log(JSON.stringify({ step: name, ok: true, ...detail }))
}

function check(condition, message, detail) {
  if (!condition) {
    throw new Error(`${message}${detail === undefined ? '' : `\n${JSON.stringify(detail, null, 2)}`}`)
  }
}

/** A browser's cookie jar as the server sees it: what getAll reads, what setAll may write. */
function render(jar, { canSetCookies }) {
  return createServerClient(url, key, {
    cookies: {
      getAll: () => [...jar].map(([name, value]) => ({ name, value })),
      setAll: (cookies) => {
        if (!canSetCookies) return // a Server Component: the new cookies are lost
        for (const { name, value, options } of cookies) {
          if (!value || options?.maxAge === 0) jar.delete(name)
          else jar.set(name, value)
        }
      },
    },
  })
}

/** One page render: the user as the page would read it, or the error the client got. */
async function user(jar, options) {
  const { data, error } = await render(jar, options).auth.getUser()
  return { user: data?.user ?? null, error }
}

function refreshToken(jar) {
  const parts = [...jar].filter(([name]) => name.includes('-auth-token')).sort(([a], [b]) => a.localeCompare(b))
  let value = parts.map(([, part]) => part).join('')
  if (value.startsWith('base64-')) value = Buffer.from(value.slice(7), 'base64url').toString()
  return value ? JSON.parse(value).refresh_token : null
}

async function main() {
  const jar = new Map()
  const signIn = await render(jar, { canSetCookies: true }).auth.signInWithPassword({ email, password })
  check(!signIn.error, 'signInWithPassword failed', signIn.error)
  const r0 = refreshToken(jar)
  check(r0, 'no session cookie after signing in', [...jar.keys()])
  step('signed in')

  // Two renders that both refresh with R0 and cannot store the answer.
  const first = await user(jar, { canSetCookies: false })
  check(first.user?.email === email, 'the first render lost the user', first.error)
  check(refreshToken(jar) === r0, 'a Server Component render changed the cookies')
  const second = await user(jar, { canSetCookies: false })
  check(second.user?.email === email, 'the second render, sending the parent token again, lost the user', second.error)
  step('parent token reused by renders that could not store cookies')

  // A render that can store cookies moves the browser on to R1, then R2.
  const stale = new Map(jar) // a copy of the cookies holding R0, kept by someone else
  check((await user(jar, { canSetCookies: true })).user, 'a render that stores cookies lost the user')
  const r1 = refreshToken(jar)
  check(r1 && r1 !== r0, 'the render did not store a rotated token', { r0, r1 })
  check((await user(jar, { canSetCookies: true })).user, 'the next render lost the user')
  check(refreshToken(jar) !== r1, 'the second render did not rotate again')
  step('rotated twice')

  // R0 is now older than the parent of the active token: reuse detection ends the session.
  const thief = await user(stale, { canSetCookies: true })
  check(!thief.user, 'a grandparent refresh token still worked', thief)
  const after = await user(jar, { canSetCookies: true })
  check(!after.user, 'the session survived the reuse of an old refresh token', after)
  step('old token reuse ended the session')
  step('done')
}

main().catch((error) => {
  console.error(error.stack ?? String(error))
  process.exit(1)
})

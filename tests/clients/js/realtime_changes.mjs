// supabase-js's postgres_changes against Gatehouse, under RLS, with two signed-in users.
//
//   node realtime_changes.mjs <gatehouse-url> <publishable-key> <alice-email> <bob-email> <password>
//
// The table public.rt_js_notes must exist and be published (the Python test creates it): a user
// sees their own notes and shared ones. Alice never hears of Bob's private note; both hear of a
// shared one; a filter narrows; an UPDATE and a DELETE arrive; a refreshed token keeps the
// subscription. Prints one JSON line per step; any failed expectation throws.

import { createClient } from '@supabase/supabase-js'

const [url, key, aliceEmail, bobEmail, password] = process.argv.slice(2)
if (!url || !key || !aliceEmail || !bobEmail || !password) {
  console.error('usage: node realtime_changes.mjs <url> <publishable-key> <alice-email> <bob-email> <password>')
  process.exit(2)
}

function step(name, detail = {}) {
  console.log(JSON.stringify({ step: name, ok: true, ...detail }))
}

function check(condition, message, detail) {
  if (!condition) throw new Error(`${message}${detail === undefined ? '' : `\n${JSON.stringify(detail, null, 2)}`}`)
}

async function signedIn(email) {
  const memory = new Map()
  const supabase = createClient(url, key, {
    auth: {
      storage: { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v), removeItem: (k) => memory.delete(k) },
      persistSession: true, autoRefreshToken: false, detectSessionInUrl: false,
    },
  })
  const { data, error } = await supabase.auth.signInWithPassword({ email, password })
  check(!error, `sign-in of ${email}`, error)
  return { supabase, user: data.user }
}

function inbox() {
  const waiting = []
  const arrived = []
  return {
    put(value) { const resolve = waiting.shift(); if (resolve) resolve(value); else arrived.push(value) },
    next(what) {
      const value = arrived.length ? Promise.resolve(arrived.shift()) : new Promise((resolve) => waiting.push(resolve))
      let timer
      const limit = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 10000) })
      return Promise.race([value, limit]).finally(() => clearTimeout(timer))
    },
    get size() { return arrived.length },
  }
}

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${channel.topic} did not subscribe`)), 10000)
    channel.subscribe((status, error) => {
      if (status === 'SUBSCRIBED') { clearTimeout(timer); resolve() }
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') { clearTimeout(timer); reject(new Error(`${status}: ${error}`)) }
    })
  })
}

const alice = await signedIn(aliceEmail)
const bob = await signedIn(bobEmail)
const toAlice = inbox()
const toBob = inbox()
const shared = inbox()
await subscribed(alice.supabase.channel('alice-notes')
  .on('postgres_changes', { event: '*', schema: 'public', table: 'rt_js_notes' }, (change) => toAlice.put(change)))
await subscribed(bob.supabase.channel('bob-notes')
  .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'rt_js_notes' }, (change) => toBob.put(change)))
await subscribed(bob.supabase.channel('bob-shared')
  .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'rt_js_notes', filter: 'shared=eq.true' },
    (change) => shared.put(change)))
step('subscribed')

let result = await bob.supabase.from('rt_js_notes').insert({ title: 'bob private' })
check(!result.error, 'bob inserts a private note', result.error)
result = await alice.supabase.from('rt_js_notes').insert({ title: 'alice shared', shared: true }).select().single()
check(!result.error, 'alice inserts a shared note', result.error)
const noteId = result.data.id
const own = await toBob.next('bob to hear of his own note')
check(own.eventType === 'INSERT' && own.new.title === 'bob private', 'bob hears his own note first', own)
const aliceFirst = await toAlice.next('alice to hear of her shared note')
check(aliceFirst.new.title === 'alice shared' && aliceFirst.new.id === noteId, 'alice hears only her shared note', aliceFirst)
check((await toBob.next('bob to hear of the shared note')).new.title === 'alice shared', 'bob hears the shared note')
check((await shared.next('the filtered channel')).new.title === 'alice shared', 'the filter lets the shared note through')
step('inserts under RLS')

// A refreshed token keeps the subscription (realtime.setAuth sends access_token to each channel).
const refreshed = await alice.supabase.auth.refreshSession()
check(!refreshed.error, 'refresh', refreshed.error)
await alice.supabase.realtime.setAuth(refreshed.data.session.access_token)
result = await alice.supabase.from('rt_js_notes').update({ title: 'alice renamed' }).eq('id', noteId)
check(!result.error, 'alice renames her note', result.error)
const renamed = await toAlice.next('alice to hear of the update')
check(renamed.eventType === 'UPDATE' && renamed.new.title === 'alice renamed', 'the update arrives', renamed)
result = await alice.supabase.from('rt_js_notes').delete().eq('id', noteId)
check(!result.error, 'alice deletes her note', result.error)
const deleted = await toAlice.next('alice to hear of the delete')
check(deleted.eventType === 'DELETE' && deleted.old.id === noteId, 'the delete arrives with the key', deleted)
step('update and delete after a token refresh')

check(toAlice.size === 0, 'alice heard nothing of bob\'s private note', toAlice.size)
await alice.supabase.removeAllChannels()
await bob.supabase.removeAllChannels()
step('done')
process.exit(0)

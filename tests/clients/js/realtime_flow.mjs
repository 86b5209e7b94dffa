// The unmodified supabase-js client's realtime (vsn 2.0.0, binary broadcast pushes) against Gatehouse.
//
//   node realtime_flow.mjs <gatehouse-url> <publishable-key>
//
// Two clients on one topic: broadcast with ack (and self), presence joins and leaves, and a
// channel left cleanly. Prints one JSON line per step; any failed expectation throws.

import { createClient } from '@supabase/supabase-js'

const [url, key] = process.argv.slice(2)
if (!url || !key) {
  console.error('usage: node realtime_flow.mjs <gatehouse-url> <publishable-key>')
  process.exit(2)
}

function step(name, detail = {}) {
  console.log(JSON.stringify({ step: name, ok: true, ...detail }))
}

function check(condition, message, detail) {
  if (!condition) throw new Error(`${message}${detail === undefined ? '' : `\n${JSON.stringify(detail, null, 2)}`}`)
}

function client() {
  return createClient(url, key, { auth: { persistSession: false, autoRefreshToken: false } })
}

function within(ms, what) {
  let timer
  const promise = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)
  })
  return { promise, clear: () => clearTimeout(timer) }
}

async function subscribed(channel) {
  const limit = within(10000, `${channel.topic} to subscribe`)
  const state = await Promise.race([
    new Promise((resolve) => channel.subscribe((status, error) => {
      if (status !== 'SUBSCRIBED') console.log(JSON.stringify({ status, error: String(error) }))
      resolve(status)
    })),
    limit.promise,
  ])
  limit.clear()
  return state
}

function next(queue, what) {
  const limit = within(10000, what)
  return Promise.race([queue.shift(), limit.promise]).finally(limit.clear)
}

function inbox() {
  const waiting = []
  const arrived = []
  return {
    put(value) { const resolve = waiting.shift(); if (resolve) resolve(value); else arrived.push(value) },
    shift() { return arrived.length ? Promise.resolve(arrived.shift()) : new Promise((resolve) => waiting.push(resolve)) },
    get size() { return arrived.length },
  }
}

const alice = client()
const bob = client()

const toBob = inbox()
const toAlice = inbox()
const roomA = alice.channel('room-js', { config: { broadcast: { self: true, ack: true } } })
roomA.on('broadcast', { event: 'cursor' }, (message) => toAlice.put(message))
const roomB = bob.channel('room-js')
roomB.on('broadcast', { event: 'cursor' }, (message) => toBob.put(message))
check(await subscribed(roomA) === 'SUBSCRIBED', 'alice subscribed')
check(await subscribed(roomB) === 'SUBSCRIBED', 'bob subscribed')
step('subscribed')

const sent = await roomA.send({ type: 'broadcast', event: 'cursor', payload: { x: 1, y: 2, name: 'Zoë 🙂' } })
check(sent === 'ok', 'broadcast acknowledged', sent)
const atBob = await next(toBob, 'bob to receive the broadcast')
check(atBob.event === 'cursor' && atBob.payload.x === 1 && atBob.payload.name === 'Zoë 🙂', 'bob got it', atBob)
const atAlice = await next(toAlice, 'alice to receive her own broadcast (self)')
check(atAlice.payload.y === 2, 'alice got her own', atAlice)
step('broadcast')

const viaHttp = await roomB.httpSend('cursor', { x: 9 })
check(viaHttp.success === true, 'httpSend accepted', viaHttp)
const overHttp = await next(toAlice, 'alice to receive the broadcast sent over HTTP')
check(overHttp.payload.x === 9, 'alice got the HTTP broadcast', overHttp)
step('broadcast over HTTP')

const joins = inbox()
const leaves = inbox()
const lobbyB = bob.channel('lobby-js', { config: { presence: { key: 'bob' } } })
lobbyB.on('presence', { event: 'join' }, ({ key: who, newPresences }) => joins.put({ who, newPresences }))
lobbyB.on('presence', { event: 'leave' }, ({ key: who }) => leaves.put(who))
check(await subscribed(lobbyB) === 'SUBSCRIBED', 'bob in the lobby')
const lobbyA = alice.channel('lobby-js', { config: { presence: { key: 'alice' } } })
check(await subscribed(lobbyA) === 'SUBSCRIBED', 'alice in the lobby')
check(await lobbyA.track({ status: 'online' }) === 'ok', 'track acknowledged')
let joined = await next(joins, 'alice to join')
while (joined.who !== 'alice') joined = await next(joins, 'alice to join')
check(joined.newPresences[0].status === 'online', 'alice is online', joined)
const state = lobbyB.presenceState()
check(state.alice && state.alice[0].status === 'online', 'presence state has alice', state)
step('presence join')
await alice.removeChannel(lobbyA)
let left = await next(leaves, 'alice to leave')
while (left !== 'alice') left = await next(leaves, 'alice to leave')
step('presence leave')

await alice.removeAllChannels()
await bob.removeAllChannels()
step('done')
process.exit(0)

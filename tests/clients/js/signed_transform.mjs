// supabase-js's createSignedUrl with a transform, unmodified, against a running Gatehouse: the URL
// it gets back must serve the resized image, as the upstream server's /render/image/sign URL does.
//
//   node signed_transform.mjs <gatehouse-url> <secret-key> <png-file>
//
// Run by tests/clients/test_js_client.py, which makes the PNG (64x64).

import { readFile } from 'node:fs/promises'
import { createClient } from '@supabase/supabase-js'

const [url, secretKey, pngPath] = process.argv.slice(2)
if (!url || !secretKey || !pngPath) {
  console.error('usage: node signed_transform.mjs <gatehouse-url> <secret-key> <png-file>')
  process.exit(2)
}

function check(condition, message, detail) {
  if (!condition) throw new Error(`${message}${detail === undefined ? '' : `\n${JSON.stringify(detail, null, 2)}`}`)
}

/** A PNG's width and height, from its IHDR chunk. */
function pngSize(bytes) {
  check(bytes.subarray(1, 4).toString() === 'PNG', 'the answer is not a PNG')
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)]
}

async function main() {
  // A server-side client with the secret key, as a Node back end would hold it.
  const supabase = createClient(url, secretKey, { auth: { persistSession: false } })
  const path = `js-poster-${Date.now()}.png`
  const image = await readFile(pngPath)
  const uploaded = await supabase.storage.from('avatars').upload(path, image, { contentType: 'image/png' })
  check(!uploaded.error, 'upload failed', uploaded.error)

  const signed = await supabase.storage.from('avatars').createSignedUrl(path, 60, {
    transform: { width: 16, height: 8, resize: 'fill', format: 'origin' },
  })
  check(!signed.error, 'createSignedUrl failed', signed.error)
  check(signed.data.signedUrl.includes('/render/image/sign/avatars/'), 'not a render URL', signed.data)
  const response = await fetch(signed.data.signedUrl)
  check(response.status === 200, `the signed URL answered ${response.status}`, await response.clone().text())
  const size = pngSize(Buffer.from(await response.arrayBuffer()))
  check(size[0] === 16 && size[1] === 8, 'the signed URL did not serve the resized image', size)

  const plain = await supabase.storage.from('avatars').createSignedUrl(path, 60)
  check(plain.data.signedUrl.includes('/object/sign/avatars/'), 'a signed URL without transform changed', plain.data)
  const whole = Buffer.from(await (await fetch(plain.data.signedUrl)).arrayBuffer())
  check(pngSize(whole)[0] === 64, 'the plain signed URL did not serve the original')
  console.log(JSON.stringify({ step: 'done', ok: true }))
}

main().catch((error) => {
  console.error(error.stack ?? String(error))
  process.exit(1)
})

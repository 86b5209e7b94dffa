// tus-js-client, unmodified, against Gatehouse's /storage/v1/upload/resumable, set up the way
// Supabase's docs show (authorization + x-upsert headers, bucketName/objectName/contentType/
// cacheControl metadata, uploadDataDuringCreation, chunked). Run by tests/clients/test_tus_clients.py.
//
//   node tus_upload.mjs <url> <apikey> <token> <bucket> <name> <file> <mode> [stopAt | uploadUrl]
//
// mode "full": upload the file; "partial": stop once stopAt bytes are acknowledged (print the
// upload's URL); "resume": go on with the upload at uploadUrl; "refused": expect the server to
// refuse the upload, print its status. One JSON line per step; a broken expectation exits 1.
import { readFileSync } from 'node:fs'
import * as tus from 'tus-js-client'

const [url, apikey, token, bucket, name, file, mode, extra] = process.argv.slice(2)
const data = readFileSync(file)
const CHUNK = 256 * 1024

function say(step, details = {}) {
  console.log(JSON.stringify({ step, ...details }))
}

function run(options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint: `${url}/storage/v1/upload/resumable`,
      retryDelays: [0, 200, 500],
      headers: { apikey, authorization: `Bearer ${token}`, 'x-upsert': 'true' },
      uploadDataDuringCreation: true,
      removeFingerprintOnSuccess: true,
      metadata: { bucketName: bucket, objectName: name, contentType: 'text/plain', cacheControl: '3600' },
      chunkSize: CHUNK,
      onError: (error) => reject(error),
      onSuccess: () => resolve({ url: upload.url, done: true }),
      onChunkComplete: (_size, accepted) => {
        if (options.stopAt !== undefined && accepted >= options.stopAt && accepted < data.length) {
          upload.abort().then(() => resolve({ url: upload.url, accepted, done: false }))
        }
      },
      ...options.tus,
    })
    upload.start()
  })
}

try {
  if (mode === 'full') {
    const result = await run({})
    say('done', result)
  } else if (mode === 'partial') {
    const result = await run({ stopAt: Number(extra) })
    if (result.done) throw new Error('the upload finished instead of stopping')
    say('done', result)
  } else if (mode === 'resume') {
    const result = await run({ tus: { uploadUrl: extra } })
    say('done', result)
  } else if (mode === 'refused') {
    try {
      await run({})
      throw new Error('the upload was not refused')
    } catch (error) {
      const status = error.originalResponse ? error.originalResponse.getStatus() : null
      if (status === null) throw error
      say('done', { status, body: error.originalResponse.getBody() })
    }
  } else {
    throw new Error(`unknown mode ${mode}`)
  }
} catch (error) {
  say('failed', { error: String(error) })
  process.exit(1)
}

// Alibaba's Node.js NLS SDK (alibabacloud-nls) against a FunSpeech bridge, as a user's Node
// service would call it: one task per run, one JSON line on stdout (the events it got; for
// synthesis the audio is written to a file). Used by tests/test_nls_node_sdk.py.
//
//   node nls_run.js transcribe|recognize <url> <token> <appkey> <pcm file> [params JSON]
//   node nls_run.js synthesize|long <url> <token> <appkey> <out file> <text> [params JSON]
"use strict"

const fs = require("fs")
const Nls = require("alibabacloud-nls")

const LIMIT_MS = 60000 // every run ends within this, answered or not
const CHUNK = 3200 // 100 ms of 16 kHz s16le

const [mode, url, token, appkey, file, ...rest] = process.argv.slice(2)
const config = { url, token, appkey }
const events = []
let audioBytes = 0

function record(str) {
  const { header, payload } = JSON.parse(str)
  events.push({ name: header.name, status: header.status, status_text: header.status_text,
    task_id: header.task_id, namespace: header.namespace, payload })
}

function finish(error) {
  console.log(JSON.stringify({ events, audio_bytes: audioBytes, error: error ? String(error) : null }))
  process.exit(0)
}

// the SDK's start() settles only on its "started" event: a TaskFailed instead ends the run here
function failedOrStarted(task, start) {
  return new Promise((resolve, reject) => {
    task.on("failed", (msg) => reject(new Error(`TaskFailed: ${msg}`)))
    start.then(resolve, reject)
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function recognise(Task, endEvent, params) {
  const task = new Task(config)
  for (const name of ["started", "changed", "begin", "end", endEvent, "failed"]) {
    task.on(name, record)
  }
  await failedOrStarted(task, task.start({ ...task.defaultStartParams(), ...params }, true, 6000))
  const pcm = fs.readFileSync(file)
  for (let i = 0; i < pcm.length; i += CHUNK) {
    task.sendAudio(pcm.subarray(i, i + CHUNK))
    await sleep(5)
  }
  await task.close()
}

async function synthesize(long, text, params) {
  const task = new Nls.SpeechSynthesizer(config, long)
  const out = fs.openSync(file, "w")
  task.on("meta", record)
  task.on("completed", record)
  task.on("failed", record)
  task.on("data", (chunk) => {
    fs.writeSync(out, chunk)
    audioBytes += chunk.length
  })
  try {
    await task.start({ ...task.defaultStartParams("xiaoyun"), text, ...params }, true, 6000)
  } finally {
    fs.closeSync(out)
  }
}

async function main() {
  setTimeout(() => finish(`no end within ${LIMIT_MS} ms`), LIMIT_MS).unref()
  if (mode === "transcribe") {
    await recognise(Nls.SpeechTranscription, "TranscriptionCompleted", JSON.parse(rest[0] || "{}"))
  } else if (mode === "recognize") {
    await recognise(Nls.SpeechRecognition, "RecognitionCompleted", JSON.parse(rest[0] || "{}"))
  } else if (mode === "synthesize" || mode === "long") {
    await synthesize(mode === "long", rest[0], JSON.parse(rest[1] || "{}"))
  } else {
    throw new Error(`unknown mode ${mode}`)
  }
}

main().then(() => finish(null), (error) => finish(error))

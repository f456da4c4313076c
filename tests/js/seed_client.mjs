// The seed's socket.io API driven by the JavaScript socket.io-client from npm, as a
// browser page or a phone app of the original would: run by tests/test_gateway_js.py.
//
//   node seed_client.mjs '{"url": ..., "control": ..., "reader": ..., "pcm": ...,
//                          "samplerate": 44100, "modules": ".../node_modules"}'
//
// One JSON line per result on stdout ({"step": ..., ...}). At {"step": "ready", "batch": n}
// the test publishes windows; this script then waits for their broadcasts. Exits 0 when
// every step ran (the test judges the values), 1 on a transport failure (stderr says why).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const config = JSON.parse(process.argv[2]);
// the package is installed in a cache outside the repository: load it from there
const require = createRequire(join(config.modules, "noop.js"));
const { io } = require("socket.io-client");
const clientVersion = require("socket.io-client/package.json").version;

const TIMEOUT_MS = 10_000;

function print(step, fields) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// one connected client; what it hears on `sys` kept apart: answers (objects) and
// broadcasts (arrays of windows)
async function connect(name, options) {
  const socket = io(config.url, { reconnection: false, timeout: TIMEOUT_MS, ...options });
  const heard = { answers: [], windows: [], rules: [] };
  socket.on("sys", (data) => (Array.isArray(data) ? heard.windows.push(...data)
                                                  : heard.answers.push(data)));
  socket.on("SampleExtractionRules", (data) => heard.rules.push(data));
  let opened = null; // the transport that opened the connection (an upgrade may follow)
  socket.io.once("open", () => (opened = socket.io.engine.transport.name));
  const transport = await new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(opened));
    socket.once("connect_error", (err) => reject(new Error(`${name}: ${err.message}`)));
  });
  return { name, socket, heard, transport };
}

async function call(client, event, data) {
  return client.socket.timeout(TIMEOUT_MS).emitWithAck(event, data);
}

async function until(test, ms = TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  while (!test() && Date.now() < deadline) await sleep(20);
  return test();
}

async function main() {
  // `anon` starts on long-polling and upgrades (a browser's default); the others are
  // websocket only (what a phone app does)
  const anon = await connect("anon", {});
  const admin = await connect("admin", { transports: ["websocket"],
                                         auth: { token: config.control } });
  const reader = await connect("reader", { transports: ["websocket"],
                                           auth: { token: config.reader } });
  print("connected", { version: clientVersion, anon: anon.socket.id,
                       transports: [anon, admin, reader].map((c) => c.transport) });

  // ----------------------------------------------------------------------- sys
  print("classifier_list", { reply: await call(anon, "sys",
                                               { sys: { classifier: { list: "" } } }) });
  print("database", { reply: await call(anon, "sys", { sys: { database: "" } }) });

  const load = { sys: { loadsource: {
    name: "marsh", url: "http://radio.example.org/marsh.ogg", database: "pond",
    date: "2025-06-15-12-00-01", channels: "0,1", is_permanent: true, format: "ogg" } } };
  print("loadsource_anonymous", { reply: await call(anon, "sys", load) });
  print("loadsource_reader", { reply: await call(reader, "sys", load) });
  print("loadsource_control", { reply: await call(admin, "sys", load) });
  print("unload_seed_spelling", { reply: await call(admin, "sys",
                                                    { sys: { loadsource: { name: "marsh" } } }) });
  print("unloadsource", { reply: await call(admin, "sys",
                                            { sys: { unloadsource: { name: "marsh" } } }) });
  print("loadsource_local_file", { reply: await call(admin, "sys", { sys: { loadsource: {
    name: "x", url: "file:///etc/passwd" } } }) });
  print("not_a_json", { reply: await call(anon, "sys", "not a dict") });
  print("unknown_sys", { reply: await call(anon, "sys", { sys: { reboot: "" } }) });

  // every answer to `sys` also comes as a `sys` event
  await until(() => anon.heard.answers.length >= 5, 2_000);
  print("sys_events", { heard: anon.heard.answers.splice(0) });

  // ------------------------------------------------------ SampleExtractionRules
  const rules = { set: "rules", rules: {
    pond: { rate: "auto", classes: "birds-*,unknown" },
    "marsh:2,3": { rate: 0.25, classes: "birds-*", length: 1.5 } } };
  print("get_rules_before", { reply: await call(anon, "SampleExtractionRules",
                                                { get: "rules" }) });
  print("set_rules_anonymous", { reply: await call(anon, "SampleExtractionRules", rules) });
  print("set_rules_control", { reply: await call(admin, "SampleExtractionRules", rules) });
  // a control token in the request itself, from a client that connected without one
  print("set_rules_token_in_request", { reply: await call(anon, "SampleExtractionRules", {
    ...rules, rules: { ...rules.rules, pond: { rate: 0.5 } }, token: config.control }) });
  print("get_rules_after", { reply: await call(reader, "SampleExtractionRules",
                                               { get: "rules" }) });
  print("database_info", { reply: await call(anon, "SampleExtractionRules",
                                             { get: "database_info" }) });
  await until(() => anon.heard.rules.length >= 4, 2_000);
  print("rules_events", { heard: anon.heard.rules.splice(0) });

  // ---------------------------------------------------------------------- live
  const pcm = readFileSync(config.pcm); // int16 little-endian, mono
  const opened = await call(anon, "sys", { sys: { add_livestream: "" } });
  print("add_livestream", { reply: opened, sid: anon.socket.id });
  const replies = {};
  let buffers = 0;
  const step = 4096 * 2; // a phone sends small buffers
  const asList = pcm.length - (pcm.length % step || step); // the last one as integers
  for (let i = 0; i < pcm.length; i += step) {
    const piece = pcm.subarray(i, Math.min(i + step, pcm.length));
    const buffer = i < asList ? piece
      : Array.from(new Int16Array(piece.buffer, piece.byteOffset, piece.length / 2));
    const reply = JSON.stringify(await call(anon, "audio",
                                            { buffer, samplerate: config.samplerate }));
    replies[reply] = (replies[reply] ?? 0) + 1;
    buffers += 1;
  }
  print("audio", { replies, buffers, bytes: pcm.length });
  const answersBefore = anon.heard.answers.length;
  print("audio_odd_bytes", { reply: await call(anon, "audio",
                                               { buffer: Buffer.from([0]),
                                                 samplerate: config.samplerate }) });
  await until(() => anon.heard.answers.length > answersBefore, 2_000);
  print("audio_odd_bytes_on_sys", { heard: anon.heard.answers.slice(answersBefore) });
  print("del_livestream", { reply: await call(anon, "sys", { sys: { del_livestream: "" } }) });

  // --------------------------------------------------------------------- rooms
  const one = await connect("one", { transports: ["websocket"] });
  const zero = await connect("zero", { transports: ["websocket"],
                                       auth: { subscribe: [{ source: "mic", channel: 0 }] } });
  print("subscribe_channel", { reply: await call(one, "subscribe",
                                                 { source: "mic", channel: 1 }) });
  print("subscribe_bad", { reply: await call(one, "subscribe", { source: "../etc" }) });
  print("ready", { batch: 1 });
  const everyone = [anon, admin, one, zero];
  await until(() => anon.heard.windows.length >= 6 && one.heard.windows.length >= 3
                    && zero.heard.windows.length >= 3);
  await sleep(300); // anything more would have come by now (the gateway flushes at 0.1 s)
  print("broadcast", { batch: 1, windows: Object.fromEntries(
    everyone.map((c) => [c.name, c.heard.windows.splice(0)])) });

  print("unsubscribe_channel", { reply: await call(one, "unsubscribe",
                                                   { source: "mic", channel: 1 }) });
  print("subscribe_source", { reply: await call(zero, "subscribe", { source: "mic" }) });
  print("ready", { batch: 2 });
  await until(() => anon.heard.windows.length >= 4 && zero.heard.windows.length >= 4);
  await sleep(300);
  print("broadcast", { batch: 2, windows: Object.fromEntries(
    everyone.map((c) => [c.name, c.heard.windows.splice(0)])) });

  print("subscribe_all", { reply: await call(one, "subscribe", { all: true }) });
  print("unsubscribe_all", { reply: await call(admin, "unsubscribe", { all: true }) });
  print("ready", { batch: 3 });
  await until(() => one.heard.windows.length >= 2);
  await sleep(300);
  print("broadcast", { batch: 3, windows: Object.fromEntries(
    everyone.map((c) => [c.name, c.heard.windows.splice(0)])) });

  // `anon` connected by long-polling; it has been upgraded to a websocket since
  print("upgraded", { transport: anon.socket.io.engine.transport.name });
  for (const client of [...everyone, reader]) client.socket.disconnect();
  print("done", {});
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`seed_client: ${err.stack ?? err}\n`);
  process.exit(1);
});

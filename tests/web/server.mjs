// What the browser scenarios share: a `hark serve` they can kill and restart, the HTTP API
// for seeding conversations, and the pass/fail tally.
//
// Environment: HARK_BIN (the hark binary), HARK_CONFIG (a config file, optional).

import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";

const bin = process.env.HARK_BIN;
const config = process.env.HARK_CONFIG;
const dir = mkdtempSync(join(tmpdir(), "hark-web-"));

let passed = 0, failed = 0;

/** Records one check; prints "ok" or "FAIL" with its name. */
export function check(name, ok, detail = "") {
  if (ok) { passed++; console.log("ok   " + name); }
  else { failed++; console.log("FAIL " + name + (detail ? ": " + detail : "")); }
}

/** Runs `wait` (a promise-returning function) and records whether it resolved. */
export async function step(name, wait) {
  try {
    await wait();
    check(name, true);
  } catch (e) {
    check(name, false, String(e.message || e).split("\n")[0]);
  }
}

/** Prints the tally and exits with its status. */
export function finish() {
  console.log(passed + " passed, " + failed + " failed");
  process.exit(failed === 0 ? 0 : 1);
}

export async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts `hark serve` on `port` with this run's database; resolves once it listens. */
export function startServer(port) {
  const args = ["serve", "--listen", "127.0.0.1:" + port, "--db", join(dir, "hark.db")];
  if (config) args.push("--config", config);
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
  return new Promise((resolve, reject) => {
    child.stdout.on("data", (chunk) => {
      if (String(chunk).includes("hark listening on")) resolve(child);
    });
    child.on("exit", (code) => reject(new Error("hark serve exited with " + code)));
  });
}

/** `kill -9`: the server gets no chance to say goodbye to its streams. */
export function kill(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill("SIGKILL");
  });
}

/** Calls the HTTP API from the test (the server is on loopback: admin routes are open). */
export async function api(base, path, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(base + path, {
    method: body === undefined ? "GET" : "POST", headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(path + ": " + response.status + " " + JSON.stringify(data));
  return data;
}

/** Creates a conversation of people; returns its id and each one's token by name. */
export async function createConversation(base, title, names) {
  const created = await api(base, "v1/conversations", {
    title, participants: names.map((name) => ({ name, kind: "human" })),
  });
  return { id: created.id, tokens: Object.fromEntries(created.participants.map((p) => [p.name, p.token])) };
}

/** The page address that hands a seat to a browser (as an invite does). */
export function seatLink(base, id, token) {
  return base + "#c=" + encodeURIComponent(id) + "&t=" + encodeURIComponent(token);
}

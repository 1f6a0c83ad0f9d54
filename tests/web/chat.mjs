// End-to-end tests of the web chat in headless Chromium, driven by tests/web.rs.
//
// Environment: HARK_BIN (the hark binary), HARK_CONFIG (a config file, optional),
// HARK_AGENT (the name of a configured stand-in agent, optional), SCREENSHOTS (a folder).
// This script starts `hark serve` itself so that it can kill and restart it mid-test.
// It prints one line per check and ends with "N passed, M failed".

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";

const bin = process.env.HARK_BIN;
const config = process.env.HARK_CONFIG;
const agentName = process.env.HARK_AGENT;
const shots = process.env.SCREENSHOTS;
const dir = mkdtempSync(join(tmpdir(), "hark-web-"));
let passed = 0, failed = 0;

function check(name, ok, detail = "") {
  if (ok) { passed++; console.log("ok   " + name); }
  else { failed++; console.log("FAIL " + name + (detail ? ": " + detail : "")); }
}

async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function startServer(port) {
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

function kill(child) {
  return new Promise((resolve) => { child.once("exit", resolve); child.kill("SIGKILL"); });
}

const port = await freePort();
const url = "http://127.0.0.1:" + port + "/";
let server = await startServer(port);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic"],
});
const timeout = { timeout: 15000 };

try {
  // --- Two people in one conversation -------------------------------------------------------
  const alice = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await alice.goto(url);
  await alice.fill("#my-name", "alice");
  await alice.check("#peer-human");
  await alice.fill("#peer-name", "bob");
  await alice.click("#start");
  await alice.waitForSelector("#chat-view:not([hidden])", timeout);
  const invite = await alice.getAttribute("#invite-link", "href", timeout);
  check("starting a conversation shows an invite link", !!invite && invite.includes("#c="));

  const bob = await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage();
  await bob.goto(invite);
  await bob.waitForSelector("#chat-view:not([hidden])", timeout);
  check("the invite link opens the conversation as bob", (await bob.textContent("#who")) === "as bob");

  // Typing shows on the other page.
  await alice.focus("#input");
  await alice.keyboard.type("hello bob", { delay: 30 });
  await bob.waitForFunction(() => document.getElementById("composing").textContent.includes("alice is typing"), null, timeout)
    .then(() => check("alice typing shows on bob's page", true))
    .catch((e) => check("alice typing shows on bob's page", false, e.message));

  // Enter sends; the message arrives on the other page.
  await alice.keyboard.press("Enter");
  await bob.waitForFunction(() => [...document.querySelectorAll("#messages .bubble")].some((b) => b.textContent === "hello bob"), null, timeout)
    .then(() => check("alice's message arrives on bob's page", true))
    .catch((e) => check("alice's message arrives on bob's page", false, e.message));
  await bob.waitForFunction(() => document.getElementById("composing").textContent === "", null, timeout)
    .then(() => check("sending ends alice's typing indicator", true))
    .catch((e) => check("sending ends alice's typing indicator", false, e.message));

  // Keyboard only: bob replies with Tab-free focus on the input and Enter.
  await bob.focus("#input");
  await bob.keyboard.type("hi alice!");
  await bob.keyboard.press("Enter");
  await alice.waitForFunction(() => [...document.querySelectorAll("#messages .bubble")].some((b) => b.textContent === "hi alice!"), null, timeout)
    .then(() => check("bob's reply arrives on alice's page", true))
    .catch((e) => check("bob's reply arrives on alice's page", false, e.message));

  // Read receipts: bob's page has shown alice's message, so alice sees "Read".
  await alice.waitForFunction(() => {
    const metas = document.querySelectorAll(".msg.mine .meta");
    return metas.length && metas[metas.length - 1].textContent === "Read";
  }, null, timeout)
    .then(() => check("alice sees her message was read", true))
    .catch((e) => check("alice sees her message was read", false, e.message));

  if (shots) {
    mkdirSync(shots, { recursive: true });
    await alice.screenshot({ path: join(shots, "web-desktop.png") });
    await bob.screenshot({ path: join(shots, "web-phone.png") });
  }

  // A reload resumes the history: every message once, in order.
  await bob.reload();
  await bob.waitForFunction(() => document.querySelectorAll("#messages .bubble").length >= 2, null, timeout);
  const afterReload = await bob.$$eval("#messages .bubble", (els) => els.map((e) => e.textContent));
  check("a reload resumes the history in order, once each",
    JSON.stringify(afterReload) === JSON.stringify(["hello bob", "hi alice!"]), JSON.stringify(afterReload));

  // The server goes away: the page says so, and when it is back, it resumes without loss.
  await kill(server);
  await alice.waitForFunction(() => document.getElementById("status").textContent.startsWith("reconnecting"), null, timeout)
    .then(() => check("the page says when the server went away", true))
    .catch((e) => check("the page says when the server went away", false, e.message));
  server = await startServer(port);
  await bob.fill("#input", "are you still there?");
  await bob.keyboard.press("Enter");
  await alice.waitForFunction(() => [...document.querySelectorAll("#messages .bubble")].some((b) => b.textContent === "are you still there?"), null, { timeout: 30000 })
    .then(() => check("after the server restarts, the page reconnects and gets new messages", true))
    .catch((e) => check("after the server restarts, the page reconnects and gets new messages", false, e.message));
  const aliceAll = await alice.$$eval("#messages .bubble", (els) => els.map((e) => e.textContent));
  check("no message lost or repeated across the reconnect",
    JSON.stringify(aliceAll) === JSON.stringify(["hello bob", "hi alice!", "are you still there?"]), JSON.stringify(aliceAll));

  // A bad link gives a clear error.
  const stranger = await (await browser.newContext()).newPage();
  await stranger.goto(url + "#c=nope&t=hark_wrong");
  await stranger.waitForSelector("#error:not([hidden])", timeout);
  check("a bad link shows a clear error", (await stranger.textContent("#error")).includes("does not open a conversation"));

  // --- A newcomer's statement is answered soon after they stop typing ---------------------------
  // Issue 16: a statement (no question mark) from someone the agent knows nothing of used to
  // wait for the 10 s hard cap. The page sends typing leases while dave types; the engine should
  // answer about 1.2 s after he sends (800 ms of quiet, then the first bubble of the draft it
  // started when the message came). Timing is reported, and only a wide bound is asserted.
  if (agentName) {
    const dave = await (await browser.newContext()).newPage();
    await dave.goto(url);
    await dave.fill("#my-name", "dave");
    await dave.check("#peer-agent");
    await dave.selectOption("#agent", agentName);
    await dave.click("#start");
    await dave.waitForSelector("#chat-view:not([hidden])", timeout);
    await dave.focus("#input");
    await dave.keyboard.type("i had a really long day at work today", { delay: 40 });
    const sent = Date.now();
    await dave.keyboard.press("Enter");
    await dave.waitForFunction((name) => [...document.querySelectorAll("#messages .msg")].some((m) => m.dataset.from === name), agentName, { timeout: 30000 })
      .then(() => {
        const ms = Date.now() - sent;
        console.log("info newcomer statement answered " + ms + " ms after the end of typing");
        check("a newcomer's statement is answered well before the 10 s hard cap (< 6 s)", ms < 6000, ms + " ms");
      })
      .catch((e) => check("a newcomer's statement is answered well before the 10 s hard cap (< 6 s)", false, e.message));
  }

  // --- A burst to an agent gets one reply ---------------------------------------------------
  if (agentName) {
    const person = await (await browser.newContext()).newPage();
    await person.goto(url);
    await person.fill("#my-name", "carol");
    await person.check("#peer-agent");
    await person.selectOption("#agent", agentName);
    await person.click("#start");
    await person.waitForSelector("#chat-view:not([hidden])", timeout);
    for (const bubble of ["hey", "so i was thinking", "what should i cook tonight?"]) {
      await person.fill("#input", bubble);
      await person.keyboard.press("Enter");
    }
    await person.waitForFunction((name) => [...document.querySelectorAll("#messages .msg")].some((m) => m.dataset.from === name), agentName, { timeout: 30000 })
      .then(() => check("the agent replies to the burst", true))
      .catch((e) => check("the agent replies to the burst", false, e.message));
    // Give a second reply every chance to appear before counting.
    await person.waitForTimeout(3000);
    const replies = await person.$$eval("#messages .msg", (els, name) => els.filter((m) => m.dataset.from === name).map((m) => m.textContent), agentName);
    check("a burst of three bubbles gets one reply", replies.length === 1, JSON.stringify(replies));
  }
} catch (e) {
  check("the scenario ran to the end", false, e.stack || String(e));
} finally {
  await browser.close();
  await kill(server).catch(() => {});
}
console.log(passed + " passed, " + failed + " failed");
process.exit(failed === 0 ? 0 : 1);

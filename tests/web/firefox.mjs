// The web chat's main flows in Debian's headless Firefox ESR, driven over WebDriver BiDi by
// puppeteer-core (playwright-core drives only its own patched Firefox builds). Run by
// tests/web.rs beside chat.mjs (Chromium), which has the full set of checks.
//
// Environment: HARK_BIN, HARK_CONFIG (optional), FIREFOX (the browser, default
// /usr/bin/firefox-esr), HARK_WEB_PAGE (optional, as in chat.mjs).
// It prints one line per check and ends with "N passed, M failed".

import puppeteer from "puppeteer-core";
import { readFileSync } from "node:fs";
import { check, finish, freePort, kill, startServer, step } from "./server.mjs";

const pageOverride = process.env.HARK_WEB_PAGE ? readFileSync(process.env.HARK_WEB_PAGE, "utf8") : null;
const port = await freePort();
const url = "http://127.0.0.1:" + port + "/";
let server = await startServer(port);
const started = Date.now();
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
  headless: true,
});
const timeout = 15000;
const notFound = [];

/** A page in its own browser context (its own localStorage), as a separate person would have. */
async function newPage(viewport) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.on("response", (r) => { if (r.status() === 404) notFound.push(r.url()); });
  await page.setViewport(viewport);
  if (pageOverride) {
    await page.setRequestInterception(true);
    page.on("request", (request) => {
      if (request.url().split("#")[0] === url) request.respond({ status: 200, contentType: "text/html; charset=utf-8", body: pageOverride });
      else request.continue();
    });
  }
  return page;
}
const until = (page, fn, ...args) => page.waitForFunction(fn, { timeout, polling: 50 }, ...args);
const shows = (page, text) => until(page, (t) => [...document.querySelectorAll("#messages .msg:not(.pending) .bubble")]
  .some((b) => b.textContent === t), text);
const bubbles = (page) => page.$$eval("#messages .msg:not(.pending) .bubble", (els) => els.map((e) => e.textContent));
const say = async (page, text) => {
  await page.locator("#input").fill(text);
  await page.focus("#input");
  await page.keyboard.press("Enter");
};
const status = (page, prefix) => until(page, (p) => document.getElementById("status").textContent.startsWith(p), prefix);

try {
  console.log("measure: " + (await browser.version()) + " started in " + (Date.now() - started) + " ms");
  const alice = await newPage({ width: 1280, height: 800 });
  await alice.goto(url);
  await alice.waitForSelector("#start-view:not([hidden])", { timeout });
  check("the start page shows no message box", !(await alice.$eval("#input", (e) => e.getClientRects().length > 0)));
  await alice.locator("#my-name").fill("alice");
  await alice.click("#peer-human");
  await alice.locator("#peer-name").fill("bob");
  await alice.click("#start");
  await alice.waitForSelector("#chat-view:not([hidden])", { timeout });
  const address = (page) => page.evaluate(() => location.href);
  check("the address bar holds no token", !(await address(alice)).includes("t="), await address(alice));
  await alice.waitForSelector("#invite-box:not([hidden])", { timeout });
  const invite = await alice.$eval("#invite-link", (e) => e.value);
  check("starting a conversation shows an invite link", invite.includes("&t="), invite);

  const bob = await newPage({ width: 390, height: 844 });
  await bob.goto(invite);
  await bob.waitForSelector("#chat-view:not([hidden])", { timeout });
  await step("the invite opens the conversation as bob", () => until(bob, () => document.getElementById("who").textContent === "as bob"));
  check("bob's address bar holds no token", !(await address(bob)).includes("t="), await address(bob));

  await alice.focus("#input");
  await alice.keyboard.type("hello bob", { delay: 20 });
  await step("alice typing shows on bob's page", () => until(bob, () => document.getElementById("composing").textContent.includes("alice is typing")));
  await alice.keyboard.press("Enter");
  await step("alice's message arrives on bob's page", () => shows(bob, "hello bob"));
  await step("sending ends alice's typing indicator", () => until(bob, () => document.getElementById("composing").textContent === ""));
  await say(bob, "hi alice! see *this*: https://example.com/x.");
  await step("bob's reply arrives, its link and emphasis kept",
    () => until(alice, () => !!document.querySelector('#messages .bubble a[href="https://example.com/x"]') &&
      document.querySelector("#messages .bubble strong")?.textContent === "this"));
  await step("alice sees her message was read", () => until(alice, () =>
    document.querySelector(".msg.last-mine .state")?.dataset.state === "read"));
  await say(bob, "שלום!");
  await step("right-to-left text is laid out right to left", () => until(alice, () =>
    [...document.querySelectorAll("#messages .bubble")].some((b) => b.textContent === "שלום!" && b.matches(":dir(rtl)"))));

  await bob.reload();
  await bob.waitForSelector("#chat-view:not([hidden])", { timeout });
  await until(bob, () => document.querySelectorAll("#messages .msg:not(.pending)").length >= 3);
  check("a reload resumes the history in order, once each",
    JSON.stringify(await bubbles(bob)) === JSON.stringify(await bubbles(alice)), JSON.stringify(await bubbles(bob)));

  // Offline: written while the server is down, sent once when it is back.
  await kill(server);
  await step("the page says when the server went away", () => status(alice, "reconnecting"));
  await say(alice, "written while the server was down");
  await step("the message waits for the connection", () => alice.waitForSelector('li.pending [data-state="waiting"]', { timeout }));
  server = await startServer(port);
  await step("after the restart it is sent", () => shows(bob, "written while the server was down"));
  await step("and confirmed on alice's page", () => shows(alice, "written while the server was down"));
  check("both screens show the same messages in the same order",
    JSON.stringify(await bubbles(alice)) === JSON.stringify(await bubbles(bob)));

  // The list of conversations.
  await alice.click("#new-chat");
  await alice.waitForSelector("#start-view:not([hidden])", { timeout });
  await step("the list keeps the conversation", () => until(alice, () => document.querySelectorAll("#conv-list .conv").length === 1));
  check("no request answered 404 (favicon included)", notFound.length === 0, JSON.stringify(notFound));
} catch (e) {
  check("the scenario ran to the end", false, e.stack || String(e));
} finally {
  await browser.close().catch(() => {});
  await kill(server).catch(() => {});
}
console.log("measure: the Firefox run took " + (Date.now() - started) + " ms");
finish();

// End-to-end tests of the web chat in headless Chromium, driven by tests/web.rs.
//
// Environment: HARK_BIN (the hark binary), HARK_CONFIG (a config file, optional),
// HARK_AGENT (the name of a configured stand-in agent, optional), SCREENSHOTS (a folder),
// HARK_WEB_PAGE (optional: serve this file as the page instead of the one compiled into the
// binary, to iterate on the page without rebuilding, or to run these checks against an old page).
// This script starts `hark serve` itself so that it can kill and restart it mid-test.
// It prints one line per check and ends with "N passed, M failed".
//
// Every wait is for a state of the page or the server, never a sleep. The only timed figures
// (the 5,000-message history, reconnecting after a restart) are printed as "measure" lines;
// the history has one generous bound that a page linear in its messages meets many times over.

import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  api, check, createConversation, finish, freePort, kill, seatLink, startServer, step,
} from "./server.mjs";

const agentName = process.env.HARK_AGENT;
const shots = process.env.SCREENSHOTS;
const pageOverride = process.env.HARK_WEB_PAGE ? readFileSync(process.env.HARK_WEB_PAGE, "utf8") : null;

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
const desktop = { width: 1280, height: 800 };
const phone = { width: 390, height: 844 };
const notFound = [];
const started = Date.now();

/** A page in a fresh browser profile (its own localStorage), as a separate person would have. */
async function newPage(options = {}, init) {
  const context = await browser.newContext({ viewport: desktop, locale: "en-US", ...options });
  if (init) await context.addInitScript(init);
  if (pageOverride) {
    await context.route(url, (route) => route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: pageOverride }));
  }
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  page.on("response", (r) => { if (r.status() === 404) notFound.push(r.url()); });
  return page;
}
const until = (page, fn, arg, ms = 15000) => page.waitForFunction(fn, arg, { timeout: ms });
/** Waits until `text` shows as a message the server confirmed (not one still on its way). */
const shows = (page, text) => until(page, (t) => [...document.querySelectorAll("#messages .msg:not(.pending) .bubble")]
  .some((b) => b.textContent === t), text);
const bubbles = (page) => page.$$eval("#messages .msg:not(.pending) .bubble", (els) => els.map((e) => e.textContent));
const say = async (page, text) => { await page.fill("#input", text); await page.keyboard.press("Enter"); };
const status = (page, prefix) => until(page, (p) => document.getElementById("status").textContent.startsWith(p), prefix);
const conversationId = (page) => new URLSearchParams(new URL(page.url()).hash.slice(1)).get("c");

// Notifications and a hidden tab, as a person whose tab is in the background would have them:
// the page's calls to the Notification API are recorded, and the test decides when it is hidden.
const backgroundable = () => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  window.__setHidden = (value) => { hidden = value; document.dispatchEvent(new Event("visibilitychange")); };
  window.__notes = [];
  window.Notification = class {
    static permission = "granted";
    static requestPermission() { return Promise.resolve("granted"); }
    constructor(title, options) { window.__notes.push({ title, body: options && options.body }); }
    close() {}
  };
  navigator.share = async (data) => { window.__shared = data; };
};

try {
  // The 5,000-message history is written through the API while the first checks run (two
  // writers, five connections each: fewer writers make each send cheaper, as every answer hands
  // over what the others wrote); it is opened after them, before the server is first killed.
  const seeded = (async () => {
    const writers = ["w0", "w1"];
    const seats = await createConversation(url, "a long history", ["reader", ...writers]);
    const seeding = Date.now();
    await Promise.all(Array.from({ length: 10 }, async (_, lane) => {
      const writer = writers[lane % 2];
      for (let i = 0; i < 500; i++) {
        await api(url, "v1/conversations/" + seats.id + "/send", { text: writer + " says line " + i + " of lane " + lane }, seats.tokens[writer]);
      }
    }));
    console.log("measure: seeded 5,000 messages in " + (Date.now() - seeding) + " ms");
    return seats;
  })();
  seeded.catch(() => {});

  // --- The start page ------------------------------------------------------------------------
  const alice = await newPage({ permissions: ["clipboard-read", "clipboard-write"] }, backgroundable);
  await alice.goto(url);
  await alice.waitForSelector("#start-view:not([hidden])", timeout);
  check("the start page shows no message box", !(await alice.isVisible("#input")) && !(await alice.isVisible("#send")));
  check("the page brings its own icon (a browser asks no /favicon.ico)",
    await alice.$eval('link[rel~="icon"]', (l) => l.href.startsWith("data:image/")).catch(() => false));

  // --- Two people: the invite, and who you are ---------------------------------------------------
  await alice.fill("#my-name", "alice");
  await alice.check("#peer-human");
  await alice.fill("#peer-name", "bob");
  await alice.click("#start");
  await alice.waitForSelector("#chat-view:not([hidden])", timeout);
  const id = conversationId(alice);
  check("the address bar holds no token of yours", !!id && !alice.url().includes("t="), alice.url());
  check("the tab title names the conversation", (await alice.title()).includes("alice & bob"), await alice.title());
  await alice.waitForSelector("#invite-box:not([hidden])", timeout).catch(() => {});
  const invite = await alice.inputValue("#invite-link").catch(() => "");
  check("starting a conversation shows an invite link", invite.includes("#c=") && invite.includes("&t="), invite);

  const aliceTab = await alice.context().newPage();
  await aliceTab.goto(url + "#c=" + id);
  await aliceTab.waitForSelector("#invite-box:not([hidden])", timeout).catch(() => {});
  check("the invite is still there in a new tab", !!invite && (await aliceTab.inputValue("#invite-link").catch(() => "")) === invite);
  await aliceTab.close();

  await alice.click("#copy-invite").catch(() => {});
  await until(alice, () => document.getElementById("copy-done")?.textContent === "Copied").catch(() => {});
  const copied = await alice.evaluate(() => navigator.clipboard.readText()).catch(() => "");
  check("the copy button copies the invite", !!invite && copied === invite, copied);
  await alice.click("#share-invite").catch(() => {});
  check("the share button hands the invite to the system's share sheet",
    await alice.evaluate((link) => !!link && !!window.__shared && window.__shared.url === link, invite));

  // Opening your own invite asks before it makes you the other person.
  await alice.goto(invite);
  await step("opening your own invite asks first", () => alice.waitForSelector("#ask[open]", timeout));
  check("the question names both seats", /alice.*bob/s.test(await alice.textContent("#ask-text").catch(() => "")));
  await alice.click("#ask-buttons button[value=stay]").catch(() => {});
  await step("staying yourself keeps you alice", () => until(alice, () => document.getElementById("who").textContent === "as alice"));
  check("the address bar still holds no token", !alice.url().includes("t="), alice.url());

  const bob = await newPage({ viewport: phone });
  await bob.goto(invite);
  await bob.waitForSelector("#chat-view:not([hidden])", timeout);
  check("the invite link opens the conversation as bob", (await bob.textContent("#who")) === "as bob");
  check("bob's address bar holds no token either", !bob.url().includes("t="), bob.url());
  check("bob's browser keeps his seat", await bob.evaluate((c) => c in JSON.parse(localStorage.getItem("hark.conversations") || "{}"), id));

  // --- Typing and sending ----------------------------------------------------------------------
  // Typing leases take 400 ms to reach the server here, so a send can overtake a lease unless the
  // page keeps them in order: a lease that lands after its message would show "typing…" for 8 s.
  // The leases reach the server one after the other, in the order the page sent them; each
  // promise in `leases` settles once the server has answered that lease.
  const leases = [];
  let network = Promise.resolve();
  await alice.route("**/typing", (route) => {
    const done = network = network
      .then(() => new Promise((resolve) => setTimeout(resolve, 400)))
      .then(() => route.fetch())
      .then((response) => route.fulfill({ response }));
    leases.push(done);
    return done;
  });
  await alice.focus("#input");
  await alice.keyboard.type("h", { delay: 30 });
  await step("alice typing shows on bob's page", () => until(bob, () => document.getElementById("composing").textContent.includes("alice is typing")));
  await alice.fill("#input", "");
  await alice.fill("#input", "hello bob");
  await alice.keyboard.press("Enter");
  await step("alice's message arrives on bob's page", () => shows(bob, "hello bob"));
  await Promise.all(leases);
  const afterSend = await api(url, "v1/conversations/" + id);
  check("a typing lease never outlives the message it was for", !afterSend.composing.includes("alice"), JSON.stringify(afterSend.composing));
  await step("sending ends alice's typing indicator", () => until(bob, () => document.getElementById("composing").textContent === ""));
  await alice.unroute("**/typing");

  // Keyboard only: bob replies with the focus in the box and Enter.
  await bob.focus("#input");
  await bob.keyboard.type("hi alice!");
  await bob.keyboard.press("Enter");
  await step("bob's reply arrives on alice's page", () => shows(alice, "hi alice!"));
  await step("alice sees her message was read", () => until(alice, () => {
    const mine = document.querySelectorAll(".msg.mine:not(.pending) .state");
    return mine.length && mine[mine.length - 1].dataset.state === "read";
  }));

  // --- What a message can hold -------------------------------------------------------------------
  const rich = "look: https://example.com/a_(b). *really* _nice_ `code`\nsecond line " +
    "<img src=x onerror=\"window.__pwned=1\"> javascript:alert(1)";
  await say(bob, rich);
  await say(bob, "שלום! מה שלומך?");
  await say(bob, "third in a row");
  await step("bob's three messages arrive", () => shows(alice, "third in a row"));
  const shown = await alice.evaluate(() => {
    const b = [...document.querySelectorAll("#messages .bubble")].find((x) => x.textContent.startsWith("look:"));
    const a = b && b.querySelector("a");
    return {
      href: a && a.href, target: a && a.target, rel: a && a.rel, links: b ? b.querySelectorAll("a").length : 0,
      strong: b && b.querySelector("strong")?.textContent, em: b && b.querySelector("em")?.textContent,
      code: b && b.querySelector("code")?.textContent, lines: b ? b.innerText.split("\n").length : 0,
      images: document.querySelectorAll("#messages img").length, pwned: window.__pwned === 1,
    };
  });
  check("a link is clickable, opens apart and leaves its full stop out",
    shown.href === "https://example.com/a_(b)" && shown.target === "_blank" && /noopener/.test(shown.rel || ""), JSON.stringify(shown));
  check("only http(s) addresses become links", shown.links === 1, JSON.stringify(shown));
  check("*bold*, _italic_ and `code` are kept", shown.strong === "really" && shown.em === "nice" && shown.code === "code", JSON.stringify(shown));
  check("line breaks are kept", shown.lines === 2, JSON.stringify(shown));
  check("HTML in a message is text, never markup", shown.images === 0 && !shown.pwned, JSON.stringify(shown));
  check("right-to-left text is laid out right to left", await alice.evaluate(() =>
    [...document.querySelectorAll("#messages .bubble")].some((b) => b.textContent.startsWith("שלום") && b.matches(":dir(rtl)"))));
  const names = await alice.$$eval('#messages .msg[data-from="bob"]', (els) => ({ all: els.length, labelled: els.filter((e) => e.querySelector(".from")).length }));
  check("the sender's name shows once per run, not above every bubble", names.all === 4 && names.labelled === 1, JSON.stringify(names));
  check("messages are grouped by day", (await alice.$$eval("#messages .day", (els) => els.map((e) => e.textContent))).join() === "Today");
  check("every message shows its time", await alice.$$eval("#messages .msg:not(.pending)", (els) => els.length > 0 && els.every((e) => e.querySelector("time[datetime]"))));

  // --- A refused message: failed, with retry ----------------------------------------------------
  let refused = false;
  await alice.route("**/send", (route) => {
    if (refused) return route.continue();
    refused = true;
    return route.fulfill({ status: 422, contentType: "application/json",
      body: JSON.stringify({ error: { code: "too_long", message: "A refusal staged by the test." } }) });
  });
  await say(alice, "this one is refused first");
  await step("a refused message shows as failed, with a retry button", () => alice.waitForSelector("li.pending.failed button.retry", timeout));
  await alice.unroute("**/send");
  await alice.click("li.pending.failed button.retry").catch(() => {});
  await step("retry sends it", () => shows(bob, "this one is refused first"));
  await step("and alice's page shows it confirmed", () => until(alice, () => !document.querySelector("#messages li.pending")));

  // --- The list of conversations -----------------------------------------------------------------
  await alice.click("#new-chat");
  await alice.waitForSelector("#start-view:not([hidden])", timeout);
  await alice.fill("#my-name", "alice");
  await alice.check("#peer-human");
  await alice.fill("#peer-name", "dana");
  await alice.click("#start");
  await until(alice, () => document.getElementById("who").textContent === "as alice" && !document.getElementById("chat-view").hidden);
  const danaId = conversationId(alice);
  await step("the list holds both conversations", () => until(alice, () => document.querySelectorAll("#conv-list .conv").length === 2));
  await say(bob, "ping while you look elsewhere");
  await shows(bob, "ping while you look elsewhere");
  await alice.evaluate(() => window.dispatchEvent(new Event("focus")));   // coming back to the window refreshes the list
  await step("the list shows the other conversation's unread count and last message", () => until(alice, (c) => {
    const item = document.querySelector('#conv-list .conv[data-id="' + c + '"]');
    return item && item.querySelector(".conv-unread")?.textContent === "1" &&
      item.querySelector(".conv-last").textContent.includes("ping while you look elsewhere");
  }, id));
  check("the tab title counts unread messages", (await alice.title()).startsWith("(1) "), await alice.title());
  await alice.click('#conv-list .conv[data-id="' + id + '"] a').catch(() => {});
  await step("opening it from the list shows it", () => shows(alice, "ping while you look elsewhere"));
  await step("opening it clears its unread count", () => until(alice, (c) =>
    !document.querySelector('#conv-list .conv[data-id="' + c + '"] .conv-unread') && !document.title.startsWith("("), id));
  await alice.click('#conv-list .conv[data-id="' + danaId + '"] .conv-leave').catch(() => {});
  await alice.click("#ask-buttons button[value=leave]").catch(() => {});
  await step("leaving a conversation takes it off the list", () => until(alice, () => document.querySelectorAll("#conv-list .conv").length === 1));
  await alice.fill("#input", "an unfinished thought");
  await alice.reload();
  await alice.waitForSelector("#chat-view:not([hidden])", timeout);
  check("the list is kept in this browser across reloads", (await alice.$$eval("#conv-list .conv", (els) => els.map((e) => e.dataset.id))).join() === id);
  check("a message being written survives a reload", (await alice.inputValue("#input")) === "an unfinished thought");
  await alice.fill("#input", "");

  // --- In the background: notifications and the title's count ---------------------------------------
  await shows(alice, "ping while you look elsewhere");
  await alice.evaluate(() => window.__setHidden(true));
  await say(bob, "are you still there?");
  await step("a message in a background tab shows in the tab title", () => until(alice, () => document.title.startsWith("(1) ")));
  check("and as a notification", await alice.evaluate(() => window.__notes.some((n) => n.body === "bob: are you still there?")),
    JSON.stringify(await alice.evaluate(() => window.__notes)));
  await alice.evaluate(() => window.__setHidden(false));
  await step("coming back clears the count", () => until(alice, () => !document.title.startsWith("(")));
  await step("and tells bob it was read", () => until(bob, () => {
    const mine = document.querySelectorAll(".msg.mine:not(.pending) .state");
    return mine.length && mine[mine.length - 1].dataset.state === "read";
  }));
  check("the page offers notifications where the browser has not been asked yet",
    await bob.evaluate(() => document.getElementById("notify")?.hidden === (Notification.permission !== "default")));

  // --- Display names in any script --------------------------------------------------------------
  {
    const zoe = await newPage();
    await zoe.goto(url);
    await zoe.waitForSelector("#start-view:not([hidden])", timeout);
    await zoe.fill("#my-name", "Zoë");
    await zoe.check("#peer-human");
    await zoe.fill("#peer-name", "سارا");
    await zoe.click("#start");
    await step("a person named “Zoë” can start a conversation with “سارا”", () => until(zoe, () =>
      !document.getElementById("chat-view").hidden && document.getElementById("who").textContent === "as Zoë"));
    check("the tab title shows both display names", (await zoe.title()).includes("Zoë & سارا"), await zoe.title());
    check("the invite names the other person by their display name",
      (await zoe.textContent("#invite-label").catch(() => "")).includes("سارا"));
    const zoeSeat = await zoe.evaluate(() => Object.values(JSON.parse(localStorage.getItem("hark.conversations") || "{}"))[0]);
    const zoeInvite = await zoe.inputValue("#invite-link").catch(() => "");
    const sara = await newPage();
    await sara.goto(zoeInvite);
    await step("the invite opens as سارا", () => until(sara, () => document.getElementById("who").textContent === "as سارا"));
    const who = await api(url, "v1/whoami", undefined, new URLSearchParams(zoeInvite.split("#")[1]).get("t"));
    check("the handles are ASCII (a slug, or p2 when nothing ASCII is left), the display names as typed",
      zoeSeat && zoeSeat.me === "zoe" && who.you.name === "p2" && who.you.display_name === "سارا" &&
      who.participants[0].display_name === "Zoë", JSON.stringify([zoeSeat && zoeSeat.me, who.you]));
    await say(sara, "سلام Zoë");
    await shows(zoe, "سلام Zoë");
    check("messages show their author's display name",
      (await zoe.$$eval("#messages .msg:not(.mine) .from", (els) => els.map((e) => e.textContent))).join() === "سارا");
    // --- A photo with a caption ---------------------------------------------------------------
    const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64");
    await zoe.setInputFiles("#photo-file", { name: "view.png", mimeType: "image/png", buffer: png });
    await step("a chosen photo shows as a preview before it is sent", () => zoe.waitForSelector("#photo-preview:not([hidden])", timeout));
    await say(zoe, "the view from the top");
    const photoShown = (page) => until(page, () => [...document.querySelectorAll("#messages .msg:not(.pending)")].some((li) =>
      li.querySelector("img.photo")?.naturalWidth > 0 && li.querySelector(".bubble").textContent === "the view from the top"));
    await step("the other person sees the photo with its caption", () => photoShown(sara));
    await step("and the sender too, once stored", () => photoShown(zoe));
    check("the preview is gone after sending", await zoe.isHidden("#photo-preview"));
    await sara.reload();
    await step("a reload keeps the photo", () => photoShown(sara));

    await zoe.click("#new-chat");
    await zoe.waitForSelector("#start-view:not([hidden])", timeout);
    await zoe.fill("#my-name", "Sam Smith");
    await zoe.check("#peer-human");
    await zoe.fill("#peer-name", "Sam Smith");
    await zoe.click("#start");
    await step("two people both named “Sam Smith” can talk", () => until(zoe, () =>
      !document.getElementById("chat-view").hidden && document.getElementById("who").textContent === "as Sam Smith"));
    const samInvite = await zoe.inputValue("#invite-link").catch(() => "");
    const sam2 = await api(url, "v1/whoami", undefined, new URLSearchParams(samInvite.split("#")[1]).get("t"));
    check("and get different handles", sam2.you.name === "sam-smith-2" && sam2.participants[0].name === "sam-smith" &&
      sam2.you.display_name === "Sam Smith", JSON.stringify(sam2.participants));
    await zoe.context().close();
    await sara.context().close();
  }

  // --- Accessibility -------------------------------------------------------------------------------
  const contrast = () => {
    const parse = (c) => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return null;
      const [r, g, b, a = 1] = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return { r, g, b, a };
    };
    const background = (node) => {
      for (let e = node; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c && c.a > 0.5) return c;
      }
      return matchMedia("(prefers-color-scheme: dark)").matches ? { r: 0, g: 0, b: 0 } : { r: 255, g: 255, b: 255 };
    };
    const lum = ({ r, g, b }) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
      .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
    const ratio = (x, y) => { const [p, q] = [lum(x), lum(y)].sort((m, n) => n - m); return (p + 0.05) / (q + 0.05); };
    const selectors = [".msg.mine:not(.pending) .bubble", ".msg:not(.mine) .bubble", ".msg:not(.mine) .bubble a",
      ".meta", ".from", ".day", "#who", "#title", "#status", "#composing", ".conv-title", ".conv-last", ".conv-time",
      "#invite-link", "#invite-label", "button:not(.quiet)", "button.quiet", ".hint", "#new-pill"];
    const worst = [];
    for (const selector of selectors) {
      for (const node of [...document.querySelectorAll(selector)].filter((n) => n.getClientRects().length).slice(-3)) {
        const value = ratio(parse(getComputedStyle(node).color), background(node));
        worst.push({ selector, ratio: Math.round(value * 100) / 100 });
      }
    }
    return worst.sort((a, b) => a.ratio - b.ratio);
  };
  await alice.click("#show-invite").catch(() => {});
  await alice.waitForSelector("#invite-box:not([hidden])", timeout).catch(() => {});
  const light = await alice.evaluate(contrast);
  check("text has at least 4.5:1 contrast (light)", light.length > 10 && light[0].ratio >= 4.5, JSON.stringify(light.slice(0, 3)));
  await alice.emulateMedia({ colorScheme: "dark" });
  const dark = await alice.evaluate(contrast);
  check("text has at least 4.5:1 contrast (dark)", dark.length > 10 && dark[0].ratio >= 4.5, JSON.stringify(dark.slice(0, 3)));
  console.log("measure: lowest contrast " + light[0].ratio + ":1 light (" + light[0].selector + "), " +
    dark[0].ratio + ":1 dark (" + dark[0].selector + ")");
  await alice.emulateMedia({ colorScheme: "light" });
  check("your own messages name their author for screen readers", await alice.$$eval(".msg.mine", (els) =>
    els.length > 0 && els.every((e) => e.querySelector(".visually-hidden")?.textContent === "You:")));
  check("the message list is not a live region (history is not read out)", await alice.$eval("#messages", (m) =>
    !m.hasAttribute("aria-live") && m.getAttribute("role") !== "log"));
  check("a new message from someone else is announced once, with its author",
    (await alice.textContent("#announce").catch(() => "")) === "bob: are you still there?");
  const heights = await alice.evaluate(async () => {
    const input = document.getElementById("input");
    const before = input.getBoundingClientRect().height;
    input.value = "1\n2\n3\n4\n5\n6";
    input.dispatchEvent(new Event("input", { bubbles: true }));
    const after = input.getBoundingClientRect().height;
    input.value = "";
    input.dispatchEvent(new Event("input", { bubbles: true }));
    return { before, after };
  });
  check("the message box grows past two lines", heights.after > heights.before * 2, JSON.stringify(heights));

  // --- 5,000 messages of history ---------------------------------------------------------------------
  {
    const seats = await seeded;
    const reader = await newPage();
    await reader.goto(seatLink(url, seats.id, seats.tokens.reader));
    const openedMs = await reader.waitForFunction(() => {
      const last = document.querySelector("#messages li:last-child");
      return last && last.dataset.seq === "5000" && performance.now();
    }, null, { timeout: 60000 }).then((h) => h.jsonValue(), () => null);
    console.log("measure: a history of 5,000 messages open (the newest on the screen) " +
      (openedMs === null ? "not within 60 s" : Math.round(openedMs) + " ms") + " after navigation started");
    check("a history of 5,000 messages opens well within 5 s", openedMs !== null && openedMs < 5000, String(openedMs));
    await step("it opens at the newest message", () => until(reader, () => {
      const m = document.getElementById("messages");
      return m.scrollHeight - m.scrollTop - m.clientHeight < 2;
    }));
    // A reader halfway up is not moved by a new message: a pill says it is there.
    await reader.$eval("#messages", (m) => { m.scrollTop = Math.round(m.scrollHeight / 2); });
    const place = await reader.$eval("#messages", (m) => m.scrollTop);
    await api(url, "v1/conversations/" + seats.id + "/send", { text: "a new one while you read" }, seats.tokens.w0);
    await step("a new message shows a pill to a reader who scrolled up", () => reader.waitForSelector("#new-pill:not([hidden])", timeout));
    check("and does not move them", await reader.$eval("#messages", (m, was) => Math.abs(m.scrollTop - was) < 2, place));
    await reader.click("#new-pill").catch(() => {});
    await step("the pill takes them to the newest message", () => until(reader, () => {
      const m = document.getElementById("messages");
      return m.scrollHeight - m.scrollTop - m.clientHeight < 2 && document.getElementById("new-pill").hidden;
    }));
    // Scrolling up brings the older pages, each once and in order, with the reader's place kept.
    let oldest = await reader.$eval("#messages li.msg", (li) => Number(li.dataset.seq));
    for (let i = 0; i < 60 && oldest > 1; i++) {
      await reader.$eval("#messages", (m) => { m.scrollTop = 0; });
      await until(reader, (was) => Number(document.querySelector("#messages li.msg").dataset.seq) < was, oldest).catch(() => {});
      oldest = await reader.$eval("#messages li.msg", (li) => Number(li.dataset.seq));
    }
    const history = await reader.$$eval("#messages li.msg", (els) => ({
      seqs: els.map((li) => Number(li.dataset.seq)),
      runs: els.every((li, i) => !!li.querySelector(".from") === (i === 0 || els[i - 1].dataset.from !== li.dataset.from)),
      days: document.querySelectorAll("#messages li.day").length,
    }));
    check("scrolling up shows all 5,001 messages, each once and in order",
      history.seqs.length === 5001 && history.seqs.every((seq, i) => seq === i + 1), history.seqs.length + " shown, oldest " + oldest);
    check("pages join seamlessly: one day separator, names once per run",
      history.days === 1 && history.runs, JSON.stringify({ days: history.days, runs: history.runs }));
    await reader.context().close();
  }

  // --- The server goes away ----------------------------------------------------------------------
  // Reconnection, on the page's own clock: with no server, it must try again at least every
  // 2.5 s of its time (a growing backoff leaves a person waiting long after the server is back).
  // The page's clock is fake and paused; the test moves it 500 ms at a time and, after each
  // step, waits until no connection attempt is in flight, so an attempt is timed to 500 ms.
  {
    const seats = await createConversation(url, "carl & dave", ["carl", "dave"]);
    const context = await browser.newContext({ viewport: desktop });
    if (pageOverride) await context.route(url, (route) => route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: pageOverride }));
    await context.addInitScript(() => {
      window.__attempts = [];
      window.__inflight = 0;
      const realFetch = window.fetch;
      window.fetch = function (input, init) {
        const promise = realFetch.call(this, input, init);
        if (!/\/events/.test(String((input && input.url) || input))) return promise;
        window.__attempts.push(Date.now());
        window.__inflight++;
        promise.then(() => { window.__inflight--; }, () => { window.__inflight--; });
        return promise;
      };
    });
    await context.clock.install();
    const carl = await context.newPage();
    await carl.goto(seatLink(url, seats.id, seats.tokens.carl));
    await status(carl, "connected");
    const downAt = Date.now() + 1000;
    await context.clock.pauseAt(downAt);
    await kill(server);
    const settle = async () => {
      for (let i = 0; i < 1000 && (await carl.evaluate(() => window.__inflight)) > 0; i++) { /* poll */ }
    };
    const seen = async (prefix) => {
      for (let i = 0; i < 1000; i++) if ((await carl.textContent("#status")).startsWith(prefix)) return true;
      return false;
    };
    await seen("reconnecting");
    for (let i = 0; i < 60; i++) { await context.clock.runFor(500); await settle(); }
    const attempts = (await carl.evaluate(() => window.__attempts)).filter((t) => t >= downAt);
    const gaps = [attempts[0] - downAt, ...attempts.slice(1).map((t, i) => t - attempts[i])];
    console.log("measure: retry gaps in 30 s without a server (page time, ms): " + gaps.join(" "));
    check("without a server, the page tries again at least every 2.5 s (+0.5 s step)",
      attempts.length >= 10 && Math.max(...gaps) <= 3000, gaps.join(" "));
    server = await startServer(port);
    let waited = 0;
    while (waited < 10000 && !(await carl.textContent("#status")).startsWith("connected")) {
      await context.clock.runFor(500);
      await settle();
      waited += 500;
    }
    check("the page is connected within 2.5 s (+0.5 s step) of its time after the server is back", waited <= 3000, waited + " ms");
    await context.close();
  }

  // A typing lease the restarted server forgot is not shown for ever.
  await bob.fill("#input", "still typing");
  await step("bob's typing shows on alice's page", () => until(alice, () => document.getElementById("composing").textContent.includes("bob is typing")));
  await kill(server);
  await step("the page says when the server went away", () => status(alice, "reconnecting"));
  let restartedAt = Date.now();
  server = await startServer(port);
  await step("the page reconnects after a restart", () => status(alice, "connected"));
  console.log("measure: alice's page was connected " + (Date.now() - restartedAt) + " ms after the server listened again");
  await step("after a reconnect, typing is what the server says (its leases died with it)",
    () => until(alice, () => document.getElementById("composing").textContent === ""));
  await bob.fill("#input", "");

  // Both write while the server is down; bob's message reaches the server first. Each screen
  // shows the server's order, and alice's message waits below bob's until it is stored.
  await kill(server);
  await status(alice, "reconnecting");
  await status(bob, "reconnecting");
  await say(alice, "alice wrote this offline");
  await step("a message written offline waits for the connection", () =>
    alice.waitForSelector('li.pending [data-state="waiting"]', timeout));
  await say(bob, "bob wrote this offline");
  await alice.route("**/send", (route) => route.abort());
  restartedAt = Date.now();
  server = await startServer(port);
  await step("bob's offline message is sent when the server is back", () => shows(bob, "bob wrote this offline"));
  await step("alice sees bob's message while hers still waits", () => shows(alice, "bob wrote this offline"));
  await alice.unroute("**/send");
  await step("alice's offline message is sent when she can reach the server", () => shows(bob, "alice wrote this offline"));
  await step("alice's page confirms it", () => shows(alice, "alice wrote this offline"));
  const aliceOrder = await bubbles(alice), bobOrder = await bubbles(bob);
  check("both screens show the same order after an outage", JSON.stringify(aliceOrder) === JSON.stringify(bobOrder),
    JSON.stringify({ alice: aliceOrder.slice(-3), bob: bobOrder.slice(-3) }));
  await bob.reload();
  await bob.waitForFunction((n) => document.querySelectorAll("#messages .msg:not(.pending)").length >= n, bobOrder.length, timeout);
  check("a reload shows the same order, every message once", JSON.stringify(await bubbles(bob)) === JSON.stringify(bobOrder));

  // A message written while the server is down survives a reload (the outbox is in localStorage).
  await kill(server);
  await status(alice, "reconnecting");
  await say(alice, "kept across a reload");
  await alice.waitForSelector('li.pending [data-state="waiting"]', timeout).catch(() => {});
  await alice.reload().catch(() => {});          // the server is down: the browser shows its error page
  server = await startServer(port);
  // Opened again in a new tab of the same browser (the error page may still be settling in the
  // old one, and a navigation there could race it).
  const aliceAgain = await alice.context().newPage();
  await alice.close();
  await aliceAgain.goto(url + "#c=" + id);
  await step("a message written offline is sent after a reload", () => shows(bob, "kept across a reload"));
  await step("and shows once on the writer's page", () => shows(aliceAgain, "kept across a reload"));
  const once = async (page) => (await bubbles(page)).filter((t) => t === "kept across a reload").length;
  check("no message lost or repeated across restarts and reloads", (await once(aliceAgain)) === 1 && (await once(bob)) === 1);

  // A bad link is not a dead end.
  const stranger = await newPage();
  await stranger.goto(url + "#c=nope&t=hark_wrong");
  await stranger.waitForSelector("#error:not([hidden])", timeout);
  check("a bad link shows a clear error", (await stranger.textContent("#error")).includes("does not open a conversation"));
  check("a bad link leaves the way to start or open a conversation", await stranger.isVisible("#start-form"));
  check("a bad link's token leaves the address bar", !stranger.url().includes("hark_wrong"), stranger.url());

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
    // A photo with a caption reaches the coach (tests/web.rs reads the prompt: "[photo] my dinner").
    const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64");
    await dave.setInputFiles("#photo-file", { name: "dinner.png", mimeType: "image/png", buffer: png });
    await dave.waitForSelector("#photo-preview:not([hidden])", timeout).catch(() => {});
    await say(dave, "my dinner");
    await step("the coach answers a photo with a caption", () => dave.waitForFunction((name) =>
      [...document.querySelectorAll("#messages .msg:not(.pending)")].filter((m) => m.dataset.from === name).length === 2,
      agentName, { timeout: 30000 }));
  }

  // --- A burst to an agent gets one reply ---------------------------------------------------
  if (agentName) {
    const person = await newPage();
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

  // --- Screenshots for the README: a fresh, ordinary conversation ---------------------------------
  if (shots) {
    mkdirSync(shots, { recursive: true });
    const sam = await newPage();
    const alex = await newPage({ viewport: phone });
    await sam.goto(url);
    // A second conversation, so that the list shows more than one (the agent stays out of it:
    // tests/web.rs checks the agent's last request).
    await sam.fill("#my-name", "sam");
    await sam.check("#peer-human");
    await sam.fill("#peer-name", "jo");
    await sam.click("#start");
    await sam.waitForSelector("#chat-view:not([hidden])", timeout);
    await say(sam, "see you at 7?");
    await shows(sam, "see you at 7?");
    await sam.click("#new-chat");
    await sam.fill("#my-name", "sam");
    await sam.check("#peer-human");
    await sam.fill("#peer-name", "alex");
    await sam.click("#start");
    await sam.waitForSelector("#chat-view:not([hidden])", timeout);
    await alex.goto(await sam.inputValue("#invite-link"));
    await alex.waitForSelector("#chat-view:not([hidden])", timeout);
    await say(sam, "are we still on for Saturday?");
    await shows(alex, "are we still on for Saturday?");
    await say(alex, "yes! *10am* at the market");
    await say(alex, "the map: https://www.openstreetmap.org/");
    await shows(sam, "the map: https://www.openstreetmap.org/");
    await say(sam, "perfect, see you there\nI'll bring coffee");
    await shows(alex, "perfect, see you there\nI'll bring coffee");
    await until(sam, () => document.querySelector(".msg.last-mine .state")?.dataset.state === "read");
    await alex.fill("#input", "great, ");
    await until(sam, () => document.getElementById("composing").textContent !== "");
    await sam.screenshot({ path: join(shots, "web-desktop.png") });
    await alex.screenshot({ path: join(shots, "web-phone.png") });
    await sam.emulateMedia({ colorScheme: "dark" });
    await sam.screenshot({ path: join(shots, "web-dark.png") });
  }

  check("no request answered 404 (favicon included)", notFound.length === 0, JSON.stringify(notFound));
} catch (e) {
  check("the scenario ran to the end", false, e.stack || String(e));
} finally {
  await browser.close();
  await kill(server).catch(() => {});
}
console.log("measure: the browser run took " + (Date.now() - started) + " ms");
finish();

//! The web chat end to end: every check in headless Chromium (playwright-core), via
//! tests/web/chat.mjs, and the main flows in headless Firefox ESR (puppeteer-core over WebDriver
//! BiDi), via tests/web/firefox.mjs.
//!
//! The browser tests need Debian's chromium and firefox-esr and the npm packages playwright-core
//! and puppeteer-core; like the MCP tests' Python SDK, they are installed on first use
//! (idempotently) so that the README's test command works on a fresh machine of this project's
//! kind. `.ci/run` installs them up front.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

static INSTALL: Mutex<()> = Mutex::new(());

/// Installs the Debian `package` providing `binary`, and the npm packages of tests/web, if missing.
fn ensure_browser_tools(web: &Path, binary: &str, package: &str) {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !Path::new(binary).exists() {
        let status = Command::new("sh")
            .args([
                "-c",
                &format!("(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {package}) >/dev/null"),
            ])
            .status()
            .expect("apt-get runs");
        assert!(
            status.success(),
            "installing {package} failed: run `apt-get install -y {package}`"
        );
    }
    let installed = ["playwright-core", "puppeteer-core"]
        .iter()
        .all(|module| web.join("node_modules").join(module).exists());
    if !installed {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(web)
            .status()
            .expect("npm runs (Node.js is needed for the browser tests)");
        assert!(status.success(), "npm install in tests/web failed");
    }
}

/// Runs one browser scenario script and asserts that all of its checks passed.
async fn run_scenario(script: &Path, envs: &[(&str, &std::ffi::OsStr)]) -> String {
    let output = tokio::process::Command::new("node")
        .arg(script)
        .env("HARK_BIN", env!("CARGO_BIN_EXE_hark"))
        .envs(envs.iter().copied())
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "browser checks failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    stdout.into_owned()
}

#[tokio::test]
async fn web_chat_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("tests/web");
    ensure_browser_tools(&web, "/usr/bin/chromium", "chromium");
    // A stand-in model for the agent part: one short sentence, so one reply is one bubble.
    let stand_in = hark_test_llm::StandIn::start().await;
    stand_in.set_responder(|_| hark_test_llm::Script::text("Pasta with garlic sounds good."));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hark.toml");
    // The rate limit off: the scenario seeds a 5,000-message history as fast as the machine
    // allows, which a fast machine does above the per-token default.
    std::fs::write(
        &config,
        format!(
            "[server]\nrate_limit_per_s = 0\n\n[[agent]]\nname = \"coach\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"stand-in\"\nmode = \"reply\"\nmax_retries = 0\n",
            stand_in.openai_base_url()
        ),
    )
    .unwrap();
    let screenshots = root.join("target/web-screenshots");
    let stdout = run_scenario(
        &web.join("chat.mjs"),
        &[
            ("HARK_CONFIG", config.as_os_str()),
            ("HARK_AGENT", "coach".as_ref()),
            ("SCREENSHOTS", screenshots.as_os_str()),
        ],
    )
    .await;
    assert!(
        stdout.contains("ok   a newcomer's statement is answered"),
        "the newcomer check ran: {stdout}"
    );
    // The coach read dave's photo as the engine's attachment: the marker, then the caption, once.
    let photo_prompts: Vec<String> = stand_in
        .requests()
        .iter()
        .filter_map(|r| r.last_user_text())
        .filter(|t| t.contains("my dinner"))
        .collect();
    assert!(
        !photo_prompts.is_empty(),
        "the coach was asked about the photo"
    );
    for text in &photo_prompts {
        assert_eq!(text.matches("[photo] my dinner").count(), 1, "{text}");
        assert_eq!(text.matches("my dinner").count(), 1, "{text}");
    }
    // The generation whose reply was delivered read the whole burst as one user message.
    let last = stand_in
        .requests()
        .last()
        .cloned()
        .expect("the agent asked its model");
    assert_eq!(
        last.last_user_text().as_deref(),
        Some("hey\nso i was thinking\nwhat should i cook tonight?")
    );
}

#[tokio::test]
async fn web_chat_in_headless_firefox() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("tests/web");
    ensure_browser_tools(&web, "/usr/bin/firefox-esr", "firefox-esr");
    run_scenario(&web.join("firefox.mjs"), &[]).await;
}

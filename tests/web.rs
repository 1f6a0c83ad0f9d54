//! The web chat end to end in headless Chromium (playwright-core), via tests/web/chat.mjs.
//!
//! The browser test needs Debian's chromium and the npm package playwright-core; like the MCP
//! tests' Python SDK, they are installed on first use (idempotently) so that the README's test
//! command works on a fresh machine of this project's kind. `.ci/run` installs them up front.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

static INSTALL: Mutex<()> = Mutex::new(());

/// Installs chromium and playwright-core if they are missing.
fn ensure_browser_tools(web: &Path) {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !Path::new("/usr/bin/chromium").exists() {
        let status = Command::new("sh")
            .args([
                "-c",
                "(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null",
            ])
            .status()
            .expect("apt-get runs");
        assert!(
            status.success(),
            "installing chromium failed: run `apt-get install -y chromium`"
        );
    }
    if !web.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(web)
            .status()
            .expect("npm runs (Node.js is needed for the browser tests)");
        assert!(status.success(), "npm install in tests/web failed");
    }
}

#[tokio::test]
async fn web_chat_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("tests/web");
    ensure_browser_tools(&web);
    // A stand-in model for the agent part: one short sentence, so one reply is one bubble.
    let stand_in = hark_test_llm::StandIn::start().await;
    stand_in.set_responder(|_| hark_test_llm::Script::text("Pasta with garlic sounds good."));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hark.toml");
    std::fs::write(
        &config,
        format!(
            "[[agent]]\nname = \"coach\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"stand-in\"\nmode = \"reply\"\nmax_retries = 0\n",
            stand_in.openai_base_url()
        ),
    )
    .unwrap();
    let output = tokio::process::Command::new("node")
        .arg(web.join("chat.mjs"))
        .env("HARK_BIN", env!("CARGO_BIN_EXE_hark"))
        .env("HARK_CONFIG", &config)
        .env("HARK_AGENT", "coach")
        .env("SCREENSHOTS", root.join("target/web-screenshots"))
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "browser checks failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("ok   a newcomer's statement is answered"),
        "the newcomer check ran: {stdout}"
    );
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

//! `hark bench --soak`: touches conversations against a child `hark serve` and reports the
//! server's memory. The figures themselves are measured, never asserted; this checks the mode
//! runs and reports what it says it does.

use std::process::Command;

use serde_json::Value;

/// Runs `hark bench ARGS --json` (it starts its own server) and returns its one JSON object.
fn bench_json(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env_remove("HARK_ADMIN_TOKEN")
        .output()
        .expect("hark bench runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn soak_touches_every_conversation_and_reports_memory() {
    let figures = bench_json(&["--soak", "25", "--idle-s", "0"]);
    assert_eq!(figures["conversations"], 25);
    assert_eq!(figures["failed"], 0);
    for key in [
        "server_rss_mib_before",
        "server_rss_mib_peak",
        "server_rss_mib_touched",
        "server_rss_mib_after_idle",
    ] {
        assert!(figures[key].as_f64().is_some_and(|mib| mib > 0.0), "{key}");
    }
}

#[test]
fn big_mib_loads_a_long_conversation_and_a_reader_far_behind_starts_at_one() {
    let figures = bench_json(&["--big-mib", "2", "--message-chars", "500"]);
    // 2 MiB of 500-character messages: more than the default window of 1,000.
    assert_eq!(figures["messages"], 4_195);
    assert_eq!(figures["far_behind_first_seq"], 1);
    for key in [
        "load_ms",
        "far_behind_check_ms",
        "server_rss_mib_loaded",
        "database_mib",
    ] {
        assert!(figures[key].as_f64().is_some_and(|v| v > 0.0), "{key}");
    }
}

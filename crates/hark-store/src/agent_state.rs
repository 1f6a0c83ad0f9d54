//! How a built-in agent's learned rhythm is written down: a small JSON object, one field per
//! number of [`PersonRhythm`], so a row stays readable with `sqlite3` and a field added later
//! reads back from an older row as its default.

use hark_core::turn::PersonRhythm;
use serde_json::{Value, json};

/// The stored form of `rhythm`.
pub(crate) fn encode_rhythm(rhythm: &PersonRhythm) -> String {
    json!({
        "gap_log_mean": rhythm.gap_log_mean,
        "gap_log_var": rhythm.gap_log_var,
        "gap_samples": rhythm.gap_samples,
        "reply_log_mean": rhythm.reply_log_mean,
        "reply_samples": rhythm.reply_samples,
        "pause_rate": rhythm.pause_rate,
        "typing_starts": rhythm.typing_starts,
    })
    .to_string()
}

/// Reads what [`encode_rhythm`] (or an older hark) wrote. A missing field takes its default; a
/// row that cannot be read at all gives the default rhythm: it is learned state, relearned in a
/// few bursts, and not worth refusing to start the agent over.
pub(crate) fn decode_rhythm(text: &str) -> PersonRhythm {
    let defaults = PersonRhythm::default();
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        tracing::warn!("an agent's saved rhythm is not JSON; it starts afresh");
        return defaults;
    };
    let float = |key: &str, default: f64| v[key].as_f64().unwrap_or(default);
    let count = |key: &str, default: u32| {
        v[key]
            .as_u64()
            .map_or(default, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    PersonRhythm {
        gap_log_mean: float("gap_log_mean", defaults.gap_log_mean),
        gap_log_var: float("gap_log_var", defaults.gap_log_var),
        gap_samples: count("gap_samples", defaults.gap_samples),
        reply_log_mean: float("reply_log_mean", defaults.reply_log_mean),
        reply_samples: count("reply_samples", defaults.reply_samples),
        pause_rate: float("pause_rate", defaults.pause_rate),
        typing_starts: count("typing_starts", defaults.typing_starts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rhythm_round_trips() {
        let mut rhythm = PersonRhythm::default();
        rhythm.observe_gap(4_000);
        rhythm.observe_gap(9_000);
        rhythm.observe_reply_latency(20_000);
        rhythm.observe_typing_start();
        assert_eq!(decode_rhythm(&encode_rhythm(&rhythm)), rhythm);
    }

    #[test]
    fn older_rows_read_back() {
        // What hark wrote before `pause_rate` and `typing_starts` existed.
        let old = r#"{"gap_log_mean":8.5,"gap_log_var":0.25,"gap_samples":3,"reply_log_mean":9.9,"reply_samples":2}"#;
        let rhythm = decode_rhythm(old);
        assert_eq!(rhythm.gap_log_mean, 8.5);
        assert_eq!(rhythm.gap_samples, 3);
        assert_eq!(rhythm.reply_samples, 2);
        assert_eq!(rhythm.pause_rate, PersonRhythm::default().pause_rate);
        assert_eq!(rhythm.typing_starts, 0);
        assert_eq!(decode_rhythm("not json"), PersonRhythm::default());
    }
}

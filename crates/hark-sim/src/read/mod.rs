//! Trace readers: each source format into the common [`Trace`](crate::trace::Trace).
//!
//! | format | input |
//! |---|---|
//! | `chitchat` | the Chit-Chat corpus `dataset.json` (conversation UUID → turns of messages) |
//! | `jsonl` | hark's own: one object per line, a message or a typing event |
//! | `slack` | a Slack export: a channel's day file (a JSON array of messages), a channel's folder of day files, or the export's root folder (every channel) |
//! | `telegram` | a Telegram Desktop export `result.json` (one chat, or all chats) |
//! | `imessage` | a macOS Messages `chat.db` (SQLite) |

mod chitchat;
mod imessage;
mod jsonl;
mod slack;
mod telegram;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::trace::Trace;

/// A trace format, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The Chit-Chat corpus `dataset.json`.
    Chitchat,
    /// hark's own JSONL.
    Jsonl,
    /// A Slack export (a day file, a channel folder or the export's root folder).
    Slack,
    /// A Telegram Desktop export `result.json`.
    Telegram,
    /// A macOS Messages `chat.db`.
    Imessage,
}

impl Format {
    /// The format's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Chitchat => "chitchat",
            Format::Jsonl => "jsonl",
            Format::Slack => "slack",
            Format::Telegram => "telegram",
            Format::Imessage => "imessage",
        }
    }
}

/// The Chit-Chat corpus split (its README): train is conversations whose UUID starts with 0-9 or
/// a-b, test those starting with c-f.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Conversations whose id starts with 0-9 or a-b: tune on these.
    Train,
    /// Conversations whose id starts with c-f: measure on these.
    Test,
}

impl Split {
    /// The split's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// Whether a Chit-Chat conversation id belongs to this split.
    pub fn contains(self, id: &str) -> bool {
        let test = matches!(
            id.chars().next().map(|c| c.to_ascii_lowercase()),
            Some('c'..='f')
        );
        match self {
            Split::Train => !test,
            Split::Test => test,
        }
    }
}

/// A trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file or folder could not be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// What.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The content is not what the format says.
    #[error("{path} is not valid {format} (line {line}): {message}")]
    Parse {
        /// What.
        path: PathBuf,
        /// The format it was read as.
        format: &'static str,
        /// Where (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The Messages database could not be read.
    #[error("cannot read the Messages database {path}: {error}")]
    Sqlite {
        /// What.
        path: PathBuf,
        /// Why.
        error: rusqlite::Error,
    },
    /// The format could not be detected.
    #[error("cannot tell the format of {0}: pass --format chitchat|jsonl|slack|telegram|imessage")]
    Unknown(PathBuf),
    /// `--split` was given for a trace that is not the Chit-Chat corpus.
    #[error("--split applies to the Chit-Chat corpus only, and {0} is not in that format")]
    SplitNotChitchat(&'static str),
    /// A folder that is neither a Slack channel (day files) nor an export root (channel folders).
    #[error(
        "{0} is not a Slack export: give a channel's day file, a channel folder of day files \
         (2018-01-04.json …), or the export's root folder (one folder per channel)"
    )]
    NotSlackFolder(PathBuf),
}

impl TraceError {
    pub(crate) fn parse(path: &Path, format: Format, line: usize, message: impl ToString) -> Self {
        TraceError::Parse {
            path: path.to_owned(),
            format: format.name(),
            line,
            message: message.to_string(),
        }
    }

    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        TraceError::Io {
            path: path.to_owned(),
            error,
        }
    }
}

/// Reads a trace, detecting the format from the content when `format` is `None`. `split` picks
/// the Chit-Chat split (an error for other formats).
pub fn read_trace(
    path: &Path,
    format: Option<Format>,
    split: Option<Split>,
) -> Result<(Trace, Format), TraceError> {
    let format = match format {
        Some(f) => f,
        None => detect(path)?,
    };
    if split.is_some() && format != Format::Chitchat {
        return Err(TraceError::SplitNotChitchat(format.name()));
    }
    let trace = match format {
        Format::Chitchat => chitchat::read(path, split)?,
        Format::Jsonl => jsonl::read(path)?,
        Format::Slack => slack::read(path)?,
        Format::Telegram => telegram::read(path)?,
        Format::Imessage => imessage::read(path)?,
    };
    Ok((trace, format))
}

/// Detects the format from the content: a SQLite header is a Messages database; a folder or a
/// JSON array is a Slack export; a first line that is a whole object with `ts_ms` is JSONL; an
/// object with Telegram's keys (`date_unixtime`, `chats`, `personal_chat`) is Telegram; one with
/// Chit-Chat's (`ratings`, `prompt`) is the corpus.
pub fn detect(path: &Path) -> Result<Format, TraceError> {
    if path.is_dir() {
        return Ok(Format::Slack);
    }
    let mut head = Vec::with_capacity(8192);
    std::fs::File::open(path)
        .and_then(|f| f.take(8192).read_to_end(&mut head))
        .map_err(|e| TraceError::io(path, e))?;
    if head.starts_with(b"SQLite format 3\0") {
        return Ok(Format::Imessage);
    }
    let text = String::from_utf8_lossy(&head);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.starts_with('[') {
        return Ok(Format::Slack);
    }
    if let Some(first) = text.lines().next()
        && let Ok(serde_json::Value::Object(o)) = serde_json::from_str(first)
        && o.contains_key("ts_ms")
    {
        return Ok(Format::Jsonl);
    }
    if text.starts_with('{') {
        let has = |k: &str| text.contains(&format!("\"{k}\""));
        if has("date_unixtime") || has("chats") || text.contains("\"personal_chat\"") {
            return Ok(Format::Telegram);
        }
        if has("ratings") || has("prompt") || text.contains("\"messages\": [[") {
            return Ok(Format::Chitchat);
        }
    }
    Err(TraceError::Unknown(path.to_owned()))
}

/// Reads a text file, without the UTF-8 byte-order mark some exporters (and Windows editors)
/// put in front: every reader accepts it.
pub(crate) fn read_to_string(path: &Path) -> Result<String, TraceError> {
    let mut text = std::fs::read_to_string(path).map_err(|e| TraceError::io(path, e))?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time such as `2018-01-04T20:04:47Z`
/// (fractional seconds and a numeric offset are accepted).
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = padded.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" | "" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh: i64 = rest.get(1..3)?.parse().ok()?;
            let mm: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds of a decimal seconds string such as Slack's `"1512085950.000216"`.
pub(crate) fn parse_seconds_ms(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: u64 = whole.parse().ok()?;
    let digits: String = frac.chars().take(3).collect();
    let ms: u64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<3}").parse().ok()?
    };
    Some(whole * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2018-01-04T20:04:47Z"),
            Some(1_515_096_287_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2018-01-04T21:04:47.25+01:00"),
            Some(1_515_096_287_250)
        );
        assert_eq!(parse_rfc3339_ms("2018-13-04T20:04:47Z"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn seconds() {
        assert_eq!(
            parse_seconds_ms("1512085950.000216"),
            Some(1_512_085_950_000)
        );
        assert_eq!(parse_seconds_ms("1512085950.5"), Some(1_512_085_950_500));
        assert_eq!(parse_seconds_ms("12"), Some(12_000));
        assert_eq!(parse_seconds_ms("x"), None);
    }

    #[test]
    fn split_rule() {
        assert!(Split::Train.contains("0abc"));
        assert!(Split::Train.contains("b123"));
        assert!(Split::Test.contains("c123"));
        assert!(Split::Test.contains("F123"));
        assert!(!Split::Test.contains("a123"));
    }
}

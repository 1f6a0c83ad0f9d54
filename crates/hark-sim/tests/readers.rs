//! Each reader on a small fixture, and format detection.

use std::path::{Path, PathBuf};

use hark_sim::read::{Format, Split, detect, read_trace};
use hark_sim::trace::{Conversation, EventKind, Trace};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One line per event: `ts sender: text [attachment]` or `ts sender typing on|off`.
fn dump(c: &Conversation) -> Vec<String> {
    c.events
        .iter()
        .map(|e| {
            let who = &c.senders[e.sender];
            match &e.kind {
                EventKind::Message { text, attachment } => match attachment {
                    Some(a) => format!("{} {who}: {text} {}", e.ts_ms, a.label()),
                    None => format!("{} {who}: {text}", e.ts_ms),
                },
                EventKind::Typing(on) => {
                    format!(
                        "{} {who} typing {}",
                        e.ts_ms,
                        if *on { "on" } else { "off" }
                    )
                }
            }
        })
        .collect()
}

fn read(name: &str, format: Option<Format>) -> Trace {
    read_trace(&fixture(name), format, None).unwrap().0
}

#[test]
fn jsonl() {
    let t = read("chat.jsonl", None);
    assert_eq!(t.skipped_one_sender, 1, "c0 has one sender");
    let ids: Vec<&str> = t.conversations.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert_eq!(
        dump(&t.conversations[0]),
        [
            "1000 ann: hey",
            "4000 ann typing on",
            "6000 ann: so what about dinner?",
            "31000 bob: pizza",
            "61000 ann: ok. [photo]",
        ]
    );
    // Events are sorted by time; senders are numbered by first appearance.
    assert_eq!(
        dump(&t.conversations[1]),
        [
            "1000 cat typing on",
            "1500 cat typing off",
            "2000 bob: hi",
            "3000 cat: yo"
        ]
    );
    assert_eq!(t.conversations[1].senders, ["cat", "bob"]);
    assert_eq!(t.turns(), 5);
    assert_eq!(t.messages(), 6);
}

#[test]
fn jsonl_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"conversation\":\"c\",\"sender\":\"a\",\"ts_ms\":1,\"text\":\"x\"}\n{\"conversation\":\"c\"}\n",
    )
    .unwrap();
    let err = read_trace(&path, Some(Format::Jsonl), None).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn chitchat_and_its_split() {
    let all = read("chitchat.json", None);
    assert_eq!(all.conversations.len(), 2);
    assert_eq!(all.skipped_one_sender, 1);
    assert_eq!(
        dump(&all.conversations[0]),
        [
            "1515096287000 s1: hey",
            "1515096292000 s1: do you have pets?",
            "1515096310000 s2: a cat",
        ]
    );
    let train = read_trace(&fixture("chitchat.json"), None, Some(Split::Train))
        .unwrap()
        .0;
    let ids: Vec<&str> = train.conversations.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a1b2-train"]);
    let test = read_trace(&fixture("chitchat.json"), None, Some(Split::Test))
        .unwrap()
        .0;
    let ids: Vec<&str> = test.conversations.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c3d4-test"]);
    assert_eq!(test.skipped_one_sender, 1, "e5f6 is in the test split");
    // --split belongs to the corpus only.
    assert!(read_trace(&fixture("chat.jsonl"), None, Some(Split::Test)).is_err());
}

#[test]
fn slack() {
    let t = read("slack-general.json", None);
    assert_eq!(t.conversations.len(), 1);
    let c = &t.conversations[0];
    assert_eq!(c.id, "slack-general");
    assert_eq!(
        dump(c),
        [
            "1515096287000 U1: morning",
            "1515096290500 U1:  [photo]",
            "1515096300000 U2: nice cat",
        ]
    );
    // A channel folder of day files reads the same.
    let dir = tempfile::tempdir().unwrap();
    let chan = dir.path().join("general");
    std::fs::create_dir(&chan).unwrap();
    std::fs::copy(fixture("slack-general.json"), chan.join("2018-01-04.json")).unwrap();
    std::fs::write(
        chan.join("2018-01-05.json"),
        r#"[{"type":"message","user":"U1","text":"next day","ts":"1515182700.000000"}]"#,
    )
    .unwrap();
    let (t, format) = read_trace(&chan, None, None).unwrap();
    assert_eq!(format, Format::Slack);
    assert_eq!(t.conversations[0].id, "general");
    assert_eq!(t.messages(), 4);
}

#[test]
fn telegram() {
    let t = read("telegram.json", None);
    assert_eq!(t.conversations.len(), 1);
    let c = &t.conversations[0];
    assert_eq!(c.id, "4242");
    assert_eq!(
        dump(c),
        [
            "1515096287000 user1: look",
            "1515096290000 user1:  [photo]",
            "1515096300000 user2: see example.org later",
            "1515096309000 user2:  [sticker]",
        ]
    );
}

/// Builds a tiny Messages database with the real table and column names.
fn make_chat_db(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(
        "CREATE TABLE handle (ROWID INTEGER PRIMARY KEY, id TEXT);
         CREATE TABLE chat (ROWID INTEGER PRIMARY KEY, chat_identifier TEXT);
         CREATE TABLE message (ROWID INTEGER PRIMARY KEY, text TEXT, handle_id INTEGER,
                               is_from_me INTEGER, date INTEGER, cache_has_attachments INTEGER);
         CREATE TABLE chat_message_join (chat_id INTEGER, message_id INTEGER);
         INSERT INTO handle VALUES (1, '+15550001'), (2, 'pat@example.org');
         INSERT INTO chat VALUES (1, '+15550001'), (2, 'pat@example.org');
         -- Modern dates: nanoseconds since 2001-01-01.
         INSERT INTO message VALUES (1, 'hey', 1, 0, 600000000000000000, 0);
         INSERT INTO message VALUES (2, 'you up?', 1, 0, 600000002500000000, 0);
         INSERT INTO message VALUES (3, 'yes', 0, 1, 600000010000000000, 0);
         INSERT INTO message VALUES (4, char(65532), 1, 0, 600000020000000000, 1);
         INSERT INTO message VALUES (5, NULL, 1, 0, 600000021000000000, 0);
         -- An old database: seconds since 2001-01-01.
         INSERT INTO message VALUES (6, 'old one', 2, 0, 300000000, 0);
         INSERT INTO message VALUES (7, 'old two', 0, 1, 300000005, 0);
         INSERT INTO chat_message_join VALUES (1,1),(1,2),(1,3),(1,4),(1,5),(2,6),(2,7);",
    )
    .unwrap();
}

#[test]
fn imessage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.db");
    make_chat_db(&path);
    assert_eq!(detect(&path).unwrap(), Format::Imessage);
    let t = read_trace(&path, None, None).unwrap().0;
    assert_eq!(t.conversations.len(), 2);
    let modern = &t.conversations[0];
    assert_eq!(modern.id, "+15550001");
    // 978307200 s (the Apple epoch) + 600000000 s.
    assert_eq!(
        dump(modern),
        [
            "1578307200000 +15550001: hey",
            "1578307202500 +15550001: you up?",
            "1578307210000 me: yes",
            "1578307220000 +15550001:  [photo]",
        ]
    );
    let old = &t.conversations[1];
    assert_eq!(
        dump(old),
        [
            "1278307200000 pat@example.org: old one",
            "1278307205000 me: old two"
        ]
    );
    assert_eq!(
        old.events[0].kind,
        EventKind::Message {
            text: "old one".into(),
            attachment: None
        }
    );
}

#[test]
fn detection() {
    assert_eq!(detect(&fixture("chat.jsonl")).unwrap(), Format::Jsonl);
    assert_eq!(detect(&fixture("chitchat.json")).unwrap(), Format::Chitchat);
    assert_eq!(
        detect(&fixture("slack-general.json")).unwrap(),
        Format::Slack
    );
    assert_eq!(detect(&fixture("telegram.json")).unwrap(), Format::Telegram);
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("odd.txt");
    std::fs::write(&odd, "hello").unwrap();
    assert!(detect(&odd).is_err());
}

// --- Input from real exports -------------------------------------------------------------------

#[test]
fn a_byte_order_mark_is_accepted_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    for (name, format) in [
        ("chat.jsonl", Format::Jsonl),
        ("chitchat.json", Format::Chitchat),
        ("slack-general.json", Format::Slack),
        ("telegram.json", Format::Telegram),
    ] {
        let with_bom = dir.path().join(name);
        let mut bytes = b"\xef\xbb\xbf".to_vec();
        bytes.extend(std::fs::read(fixture(name)).unwrap());
        std::fs::write(&with_bom, bytes).unwrap();
        assert_eq!(detect(&with_bom).unwrap(), format, "{name}");
        let (read_with, _) = read_trace(&with_bom, None, None).unwrap();
        let read_without = read(name, None);
        assert_eq!(
            read_with.conversations.len(),
            read_without.conversations.len(),
            "{name}"
        );
        for (a, b) in read_with
            .conversations
            .iter()
            .zip(&read_without.conversations)
        {
            assert_eq!(dump(a), dump(b), "{name}");
        }
    }
}

#[test]
fn jsonl_ignores_fields_it_does_not_know() {
    // A BOM, exporter ids, reactions, nested metadata: the lines are read, not refused.
    let t = read("extra-fields.jsonl", None);
    assert_eq!(
        dump(&t.conversations[0]),
        ["1000 ann: hey", "2500 ann typing on", "9000 bob: hi ann"]
    );
}

#[test]
fn a_slack_export_root_reads_every_channel() {
    let (t, format) = read_trace(&fixture("slack-export"), None, None).unwrap();
    assert_eq!(format, Format::Slack);
    let ids: Vec<&str> = t.conversations.iter().map(|c| c.id.as_str()).collect();
    // channels.json and users.json hold no messages; a channel without day files is skipped.
    assert_eq!(ids, ["general", "random"]);
    assert_eq!(
        dump(&t.conversations[1]),
        [
            "1515182700000 U2: lunch?",
            "1515182760000 U1: yes",
            "1515182765000 U1: at noon"
        ]
    );
    assert_eq!(t.turns(), 4);
}

#[test]
fn a_folder_that_is_no_slack_export_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("photos")).unwrap();
    let err = read_trace(dir.path(), None, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("is not a Slack export: give a channel's day file"),
        "{err}"
    );
}

//! What the text of a bubble says about whether the person is done: the punctuation and word
//! rules of completeness, and control words.

use super::super::Attachment;

/// How finished a bubble looks on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Completeness {
    /// Terminal `?`, `.`, `!`, an emoji or emoticon, a trailing "lol"/"haha", a lone
    /// acknowledgement ("ok", "thanks"), a voice note or a sticker.
    Complete,
    /// Neither: most chat bubbles without punctuation ("hey", "ok so the thing").
    Neutral,
    /// Mid-thought: a trailing conjunction or article, a comma, colon, dash or ellipsis, a lone
    /// filler ("and", "so", "but", "i", "um"), or a photo, video or file without a caption.
    Partial,
}

/// A message that is a control word, matched on the whole message (case, punctuation and spacing
/// ignored): "Wait!!" is a hold, "wait what?" is an ordinary message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlWord {
    /// "wait", "hold on", "one sec", "brb"…: the person announced more is coming.
    Hold,
    /// "stop", "nvm", "never mind", "forget it"…: cancel whatever is in progress, stay silent.
    Stop,
}

/// Classifies one bubble by its punctuation and last words. A caption arriving after a bare photo is handled by the engine, which
/// knows the previous message.
pub fn completeness(text: &str, attachment: Option<Attachment>) -> Completeness {
    let text = text.trim();
    if text.is_empty() {
        return match attachment {
            Some(Attachment::Photo | Attachment::Video | Attachment::File) => Completeness::Partial,
            Some(Attachment::Audio | Attachment::Sticker) => Completeness::Complete,
            None => Completeness::Neutral,
        };
    }
    if EMOTICONS.iter().any(|e| text.ends_with(e)) {
        return Completeness::Complete;
    }
    if text.ends_with("..") || text.ends_with('…') {
        return Completeness::Partial;
    }
    // Closing quotes and brackets do not change what the sentence inside them says.
    let core = text.trim_end_matches(['"', '\'', ')', ']', '}', '»', '”', '’', '*', '_']);
    let Some(last) = core.chars().next_back() else {
        return Completeness::Neutral;
    };
    match last {
        '?' | '!' | '.' | '？' | '！' | '。' | '‼' | '⁉' => return Completeness::Complete,
        ',' | ';' | ':' | '-' | '–' | '—' | '&' | '+' | '/' | '(' | '，' => {
            return Completeness::Partial;
        }
        _ => {}
    }
    if ends_with_emoji(core) {
        return Completeness::Complete;
    }
    let mut words = core
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty());
    let Some(last_word) = words.next_back() else {
        return Completeness::Neutral;
    };
    let lone = words.next_back().is_none();
    let last_word = last_word.to_ascii_lowercase();
    let w = last_word.as_str();
    if lone && LONE_PARTIAL.contains(&w) {
        return Completeness::Partial;
    }
    if lone && LONE_COMPLETE.contains(&w) {
        return Completeness::Complete;
    }
    if TRAILING_PARTIAL.contains(&w) {
        return Completeness::Partial;
    }
    if is_laugh(w) {
        return Completeness::Complete;
    }
    Completeness::Neutral
}

/// The control word a whole message is, if any. Only short messages are considered.
pub fn control_word(text: &str) -> Option<ControlWord> {
    if text.len() > 40 {
        return None;
    }
    let mut norm = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_alphanumeric() {
            norm.extend(c.to_lowercase());
        } else if c.is_whitespace() && !norm.is_empty() && !norm.ends_with(' ') {
            norm.push(' ');
        }
    }
    let norm = norm.trim_end();
    if HOLD_WORDS.contains(&norm) {
        Some(ControlWord::Hold)
    } else if STOP_WORDS.contains(&norm) {
        Some(ControlWord::Stop)
    } else {
        None
    }
}

// Apostrophes are dropped before matching, so "gimme a sec" and "lemme think" need no variants.
const HOLD_WORDS: &[&str] = &[
    "wait",
    "wait wait",
    "wait a sec",
    "wait a second",
    "wait a minute",
    "wait up",
    "hold on",
    "hold up",
    "hold on a sec",
    "hang on",
    "hang on a sec",
    "one sec",
    "one second",
    "1 sec",
    "a sec",
    "sec",
    "just a sec",
    "just a second",
    "one moment",
    "a moment",
    "just a moment",
    "one min",
    "1 min",
    "one minute",
    "just a minute",
    "gimme a sec",
    "give me a sec",
    "give me a second",
    "give me a minute",
    "brb",
    "let me think",
    "lemme think",
    "let me check",
    "lemme check",
];

const STOP_WORDS: &[&str] = &[
    "stop",
    "stop it",
    "stop please",
    "please stop",
    "no stop",
    "nvm",
    "never mind",
    "nevermind",
    "forget it",
    "forget that",
    "ignore that",
    "disregard",
    "disregard that",
    "cancel",
    "cancel that",
    "shh",
    "shhh",
    "shush",
    "be quiet",
    "enough",
];

/// Words after which a sentence cannot end.
const TRAILING_PARTIAL: &[&str] = &[
    "and", "or", "but", "nor", "because", "cause", "cuz", "bc", "although", "unless", "whereas",
    "plus", "if", "the", "a", "an", "my", "your", "our", "their", "i",
];

/// Fillers that, alone, announce more.
const LONE_PARTIAL: &[&str] = &[
    "and", "so", "but", "i", "or", "also", "like", "then", "because", "well", "um", "umm", "uh",
    "uhh", "hmm", "anyway", "anyways", "btw", "actually",
];

/// Lone acknowledgements: a whole answer in one word.
const LONE_COMPLETE: &[&str] = &[
    "ok", "okay", "k", "kk", "yes", "yeah", "yep", "yup", "no", "nope", "nah", "sure", "thanks",
    "thx", "ty", "cool", "great", "nice", "fine", "alright", "bye", "np",
];

const EMOTICONS: &[&str] = &[
    ":)", ":-)", ":(", ":-(", ":D", ":-D", ";)", ";-)", ":P", ":p", ":-P", "<3", "xD", "XD", ":/",
    ":o", ":O", "^^", ":3", "=)",
];

fn is_laugh(w: &str) -> bool {
    matches!(w, "lol" | "lmao" | "rofl" | "xd" | "jk")
        || (w.len() >= 4 && (w.starts_with("haha") || w.starts_with("hehe")))
}

/// Whether the text ends with an emoji, skipping variation selectors, joiners and skin tones.
fn ends_with_emoji(text: &str) -> bool {
    let last = text.chars().rev().find(|&c| {
        !matches!(
            c as u32,
            0xFE0E | 0xFE0F | 0x200D | 0x20E3 | 0x1F3FB..=0x1F3FF
        )
    });
    last.is_some_and(|c| {
        matches!(c as u32,
            0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0x2300..=0x23FF | 0x3030 | 0x303D)
    })
}

/// Whether the text's last sentence is a question (closing quotes and brackets ignored).
pub fn ends_in_question(text: &str) -> bool {
    let core = text
        .trim_end()
        .trim_end_matches(['"', '\'', ')', ']', '}', '»', '”', '’', '*', '_']);
    core.ends_with(['?', '？', '⁉'])
}

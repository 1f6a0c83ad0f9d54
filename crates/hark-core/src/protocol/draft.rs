//! A participant's private draft and the character arithmetic of its limits.

/// An ordered list of segments, one per append. Push sends their concatenation, unaltered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draft {
    segments: Vec<String>,
    /// Unicode scalar values over all segments, kept so limits cost nothing to check.
    chars: usize,
}

impl Draft {
    /// Adds a segment at the end.
    pub fn push(&mut self, segment: String) {
        self.chars += segment.chars().count();
        self.segments.push(segment);
    }

    /// Removes and returns the last segment; `None` when the draft is empty.
    pub fn pop(&mut self) -> Option<String> {
        let segment = self.segments.pop()?;
        self.chars -= segment.chars().count();
        Some(segment)
    }

    /// Drops every segment.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.chars = 0;
    }

    /// True when the draft has no segments.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// True when push would have nothing worth sending.
    pub fn text_is_blank(&self) -> bool {
        self.segments.iter().all(|s| s.trim().is_empty())
    }

    /// How many segments the draft holds.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Unicode scalar values over all segments.
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// The exact text push would send.
    pub fn text(&self) -> String {
        self.segments.concat()
    }
}

/// Splits `text` after `keep` Unicode scalar values: never inside a character.
pub fn cut_to_chars(text: &str, keep: usize) -> (&str, &str) {
    match text.char_indices().nth(keep) {
        Some((byte, _)) => text.split_at(byte),
        None => (text, ""),
    }
}

/// The first few words of dropped text, for a notice a model can act on.
pub fn notice_excerpt(dropped: &str) -> String {
    const WORDS: usize = 8;
    const MAX_CHARS: usize = 60;
    let words: Vec<&str> = dropped.split_whitespace().take(WORDS + 1).collect();
    let mut excerpt = words[..words.len().min(WORDS)].join(" ");
    let mut cut = words.len() > WORDS;
    if excerpt.chars().count() > MAX_CHARS {
        excerpt = cut_to_chars(&excerpt, MAX_CHARS).0.to_owned();
        cut = true;
    }
    if cut {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(cut_to_chars("héllo", 2), ("hé", "llo"));
        assert_eq!(cut_to_chars("👋🏽x", 1), ("👋", "🏽x"));
        assert_eq!(cut_to_chars("ab", 5), ("ab", ""));
    }

    #[test]
    fn excerpt_keeps_the_first_words() {
        assert_eq!(notice_excerpt("one two"), "one two");
        assert_eq!(
            notice_excerpt("a b c d e f g h i j"),
            "a b c d e f g h…".to_owned()
        );
    }

    #[test]
    fn counts_scalar_values() {
        let mut draft = Draft::default();
        draft.push("日本".into());
        draft.push("🙂".into());
        assert_eq!(draft.chars(), 3);
        assert_eq!(draft.pop().as_deref(), Some("🙂"));
        assert_eq!(draft.chars(), 2);
    }
}

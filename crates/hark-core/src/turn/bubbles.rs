//! Splitting a reply into chat bubbles, and the typing cadence before each.

/// Splits a reply into at most `max_bubbles` bubbles (at least one if the reply is not blank).
///
/// Paragraphs (separated by a blank line) are the units when there are two or more; otherwise
/// sentences, ending at `.`, `!`, `?` or `…` (with any closing quotes or brackets) followed by
/// whitespace and a word that does not start in lower case, except after a number ("1. ") or a
/// common abbreviation ("e.g. "). A single paragraph that holds a list (a line starting with `-`,
/// `*`, `•` or `1.`) stays whole. A split is always at whitespace, never inside a word. When there
/// are more units than bubbles, the last bubble absorbs the rest verbatim. Each bubble is trimmed.
pub fn split_bubbles(reply: &str, max_bubbles: u32) -> Vec<String> {
    let reply = reply.trim();
    if reply.is_empty() {
        return Vec::new();
    }
    let max = max_bubbles.max(1) as usize;
    let mut starts = paragraph_starts(reply);
    if starts.len() < 2 && !has_list(reply) {
        starts = sentence_starts(reply);
    }
    starts.truncate(max);
    let mut bubbles = Vec::with_capacity(starts.len());
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(reply.len());
        let piece = reply[start..end].trim();
        if !piece.is_empty() {
            bubbles.push(piece.to_owned());
        }
    }
    bubbles
}

/// Milliseconds of simulated typing before a bubble of `chars` characters.
pub fn cadence_ms(chars: usize, typing_cps: u32, min_ms: u64, max_ms: u64) -> u64 {
    let max_ms = max_ms.max(min_ms);
    if typing_cps == 0 {
        return max_ms;
    }
    let ms = (chars as u64).saturating_mul(1000) / u64::from(typing_cps);
    ms.clamp(min_ms, max_ms)
}

/// Byte offsets where paragraphs start: the text start, and the first non-blank after a blank line.
fn paragraph_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    let mut newlines = 0;
    let mut in_gap = false;
    for (i, c) in text.char_indices() {
        if c == '\n' {
            newlines += 1;
            in_gap = true;
        } else if c.is_whitespace() {
            continue;
        } else {
            if in_gap && newlines >= 2 {
                starts.push(i);
            }
            newlines = 0;
            in_gap = false;
        }
    }
    starts
}

/// Byte offsets where sentences start.
fn sentence_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !matches!(c, '.' | '!' | '?' | '…') {
            continue;
        }
        // Take the whole run of terminal punctuation and closing marks.
        while let Some(&(_, d)) = chars.peek() {
            if matches!(
                d,
                '.' | '!' | '?' | '…' | '"' | '\'' | ')' | ']' | '”' | '’' | '»'
            ) {
                chars.next();
            } else {
                break;
            }
        }
        let Some(&(_, next)) = chars.peek() else {
            break;
        };
        if !next.is_whitespace() || (c == '.' && !ends_sentence(&text[..i])) {
            continue;
        }
        // Skip the whitespace; the next sentence starts at the first non-blank, unless it goes on
        // in lower case ("Wait... really?").
        while let Some(&(_, d)) = chars.peek() {
            if d.is_whitespace() {
                chars.next();
            } else {
                break;
            }
        }
        if let Some(&(j, d)) = chars.peek()
            && !d.is_lowercase()
        {
            starts.push(j);
        }
    }
    starts
}

/// Whether some line of the text is a list item.
fn has_list(text: &str) -> bool {
    text.lines().map(str::trim_start).any(|line| {
        if line.starts_with("- ") || line.starts_with("* ") || line.starts_with("• ") {
            return true;
        }
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && (line[digits..].starts_with(". ") || line[digits..].starts_with(") "))
    })
}

/// Whether a `.` after `before` ends a sentence: not after a number or a known abbreviation.
fn ends_sentence(before: &str) -> bool {
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    if word.is_empty() {
        return true;
    }
    if word.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let lower = word.to_ascii_lowercase();
    !ABBREVIATIONS.contains(&lower.as_str())
}

const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "jr", "sr", "prof", "approx", "ca",
    "cf", "fig", "a.m", "p.m",
];

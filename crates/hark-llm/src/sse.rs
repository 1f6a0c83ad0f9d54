//! A strict server-sent-events parser: bytes in, `(event name, data)` pairs out.
//!
//! Stricter than the SSE specification on purpose: a line that is not a comment or one of the
//! four SSE fields means the peer is not speaking the event stream we asked for (an HTML error
//! page from a proxy, a plain JSON body), and that is reported as `Malformed` instead of being
//! silently ignored.

use crate::LlmError;

/// Longest line or event we buffer; a peer that sends more without a line break is not an
/// event stream we can use.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, if any (Anthropic names every event; OpenAI names none).
    pub(crate) event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub(crate) data: String,
}

#[derive(Default)]
pub(crate) struct SseParser {
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds a chunk of the body; complete events are appended to `out`.
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LlmError> {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(offset) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let line = std::mem::take(&mut self.pending);
            let result = self.line(&line[start..end], out);
            self.pending = line;
            result?;
            start = end + 1;
        }
        self.pending.drain(..start);
        let buffered = self.pending.len() + self.data.as_ref().map_or(0, String::len);
        if buffered > MAX_EVENT_BYTES {
            return Err(LlmError::Malformed(format!(
                "an event longer than {MAX_EVENT_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// The body ended: a last line without its line break still counts, and so does a last
    /// event without its blank line.
    pub(crate) fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), LlmError> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.line(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LlmError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return Err(LlmError::Malformed("a line that is not UTF-8".to_owned()));
        };
        if line.starts_with(':') {
            return Ok(()); // A comment: keep-alives and gateway notes.
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            "id" | "retry" => {}
            _ => {
                return Err(LlmError::Malformed(format!(
                    "not an event-stream line: {:?}",
                    preview(line)
                )));
            }
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            out.push(SseEvent { event, data });
        }
    }
}

/// The start of a text, for error messages.
pub(crate) fn preview(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&str]) -> Result<Vec<SseEvent>, LlmError> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk.as_bytes(), &mut out)?;
        }
        parser.finish(&mut out)?;
        Ok(out)
    }

    fn event(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_split_anywhere_reassemble() {
        let text = "event: ping\ndata: {\"type\": \"ping\"}\n\ndata: a\r\ndata: b\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        let whole = parse(&[text]).unwrap();
        assert_eq!(
            whole,
            vec![
                event(Some("ping"), "{\"type\": \"ping\"}"),
                event(None, "a\nb"),
                event(None, "[DONE]"),
            ]
        );
        for cut in 0..text.len() {
            assert_eq!(
                parse(&[&text[..cut], &text[cut..]]).unwrap(),
                whole,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_last_event_without_its_blank_line_counts() {
        assert_eq!(
            parse(&["data: [DONE]"]).unwrap(),
            vec![event(None, "[DONE]")]
        );
    }

    #[test]
    fn lines_that_are_not_sse_are_malformed() {
        assert!(matches!(
            parse(&["<html>502 Bad Gateway</html>\n\n"]),
            Err(LlmError::Malformed(_))
        ));
        assert!(matches!(
            parse(&["{\"id\": \"chatcmpl-1\"}\n"]),
            Err(LlmError::Malformed(_))
        ));
    }

    #[test]
    fn an_endless_line_is_malformed() {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        let chunk = vec![b'a'; 1024 * 1024];
        let mut result = Ok(());
        for _ in 0..10 {
            result = parser.push(&chunk, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(LlmError::Malformed(_))));
    }
}

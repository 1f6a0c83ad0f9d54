//! The endpoint model: the turn engine's `AskEndpoint` answered by a small, fast model.
//!
//! Each question runs in its own task, beside everything else the driver does: the driver never
//! waits for it. A verdict `{"done": bool, "wait_ms": n}` that arrives within the model's
//! `timeout_ms` goes back to the engine as [`Input::EndpointVerdict`]; a timeout, a provider
//! error or an answer that is not such a verdict feeds nothing, and the engine's rules decide
//! once its own `endpoint_model_timeout_ms` passes. A newer question aborts the task of the older
//! one, which drops its stream and so closes the request.

use std::time::Duration;

use futures::StreamExt;
use hark_core::turn::{Input, Prompt};
use hark_llm::{ChatRequest, StreamEvent};
use serde_json::Value;
use tokio::sync::mpsc;

use super::config::EndpointModel;
use super::prompt::chat_messages;

/// A verdict that asks to wait longer than this is not believed: the engine's own hard cap is
/// 10 s by default, and a model that says "wait a minute" has misunderstood the question.
pub const MAX_VERDICT_WAIT_MS: u64 = 60_000;
/// A verdict is a few tokens of JSON.
const VERDICT_MAX_TOKENS: u32 = 40;

/// Asks `model` question `ask` about `prompt` and feeds its verdict to the driver, if one comes
/// in time and makes sense.
pub(crate) async fn ask(
    model: EndpointModel,
    ask: u64,
    prompt: Prompt,
    results: mpsc::UnboundedSender<Input>,
) {
    let request = ChatRequest {
        model: model.model.clone(),
        system: Some(model.prompt.clone()),
        messages: chat_messages(&prompt),
        tools: Vec::new(),
        max_tokens: VERDICT_MAX_TOKENS,
        temperature: Some(0.0),
    };
    let answer = async {
        let mut stream = model.provider.stream(request).await?;
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::Text(delta) => text.push_str(&delta),
                StreamEvent::ToolCall(_) => {}
                StreamEvent::Finished { .. } => break,
            }
        }
        Ok::<_, hark_llm::LlmError>(text)
    };
    let text = match tokio::time::timeout(Duration::from_millis(model.timeout_ms), answer).await {
        Ok(Ok(text)) => text,
        Ok(Err(error)) => {
            tracing::debug!(%error, ask, "the endpoint model failed; the rules decide");
            return;
        }
        Err(_) => {
            tracing::debug!(
                ask,
                "the endpoint model did not answer in time; the rules decide"
            );
            return;
        }
    };
    match verdict(&text) {
        Some((done, wait_ms)) => {
            tracing::debug!(ask, done, wait_ms, "endpoint verdict");
            let _ = results.send(Input::EndpointVerdict { ask, done, wait_ms });
        }
        None => tracing::debug!(
            ask,
            answer = %super::config::shorten(&text, 200),
            "the endpoint model's answer is not a verdict; the rules decide"
        ),
    }
}

/// `(done, wait_ms)` from a model's answer: a JSON object with a boolean `done` and, when not
/// done, a whole `wait_ms` from 0 to [`MAX_VERDICT_WAIT_MS`]. Code fences and words around the
/// object are tolerated (small models add them); anything else is not a verdict.
pub fn verdict(text: &str) -> Option<(bool, u64)> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let object: Value = serde_json::from_str(text.get(start..=end)?).ok()?;
    let done = object.get("done")?.as_bool()?;
    if done {
        return Some((true, 0));
    }
    let wait = object.get("wait_ms")?;
    let wait_ms = match wait.as_u64() {
        Some(ms) => ms,
        // A whole number written with a fraction (`1500.0`), as some models do.
        None => {
            let ms = wait.as_f64()?;
            if ms.fract() != 0.0 || !(0.0..=MAX_VERDICT_WAIT_MS as f64).contains(&ms) {
                return None;
            }
            ms as u64
        }
    };
    (wait_ms <= MAX_VERDICT_WAIT_MS).then_some((false, wait_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_strictly() {
        assert_eq!(verdict(r#"{"done": true}"#), Some((true, 0)));
        assert_eq!(verdict(r#"{"done": true, "wait_ms": 5}"#), Some((true, 0)));
        assert_eq!(
            verdict(r#"{"done": false, "wait_ms": 2500}"#),
            Some((false, 2500))
        );
        assert_eq!(
            verdict("```json\n{\"done\": false, \"wait_ms\": 1500.0}\n```"),
            Some((false, 1500))
        );
        for garbage in [
            "",
            "yes",
            "done",
            r#"{"done": "yes"}"#,
            r#"{"finished": true}"#,
            r#"{"done": false}"#,
            r#"{"done": false, "wait_ms": -5}"#,
            r#"{"done": false, "wait_ms": 1.5}"#,
            r#"{"done": false, "wait_ms": 3600000}"#,
            r#"{"done": false, "wait_ms": "soon"}"#,
            r#"} {"#,
        ] {
            assert_eq!(verdict(garbage), None, "{garbage:?}");
        }
    }
}

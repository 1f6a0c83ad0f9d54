//! The turn engine's prompt as a provider's chat messages, shared by the reply and the
//! endpoint model.

use hark_core::turn::{Prompt, Role};
use hark_llm::ChatMessage;

/// The engine's prompt as chat messages. Providers want the conversation to open with the
/// person, so leading agent turns are left out.
pub(crate) fn chat_messages(prompt: &Prompt) -> Vec<ChatMessage> {
    prompt
        .turns
        .iter()
        .skip_while(|t| t.role == Role::Assistant)
        .map(|t| match t.role {
            Role::User => ChatMessage::User {
                text: t.text.clone(),
            },
            Role::Assistant => ChatMessage::Assistant {
                text: t.text.clone(),
                tool_calls: Vec::new(),
            },
        })
        .collect()
}

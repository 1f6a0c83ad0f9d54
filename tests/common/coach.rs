//! A conversation of pat (a person) and coach (a built-in reply agent on a stand-in model
//! server that speaks the OpenAI wire format), shared by the agent and cluster tests.

use hark_test_llm::StandIn;
use serde_json::json;

use super::{Conversation, TestServer};

/// A config file with the coach agent on `stand_in`; `extra_turn` goes into its `[agent.turn]`.
pub fn config(stand_in: &StandIn, extra_turn: &str) -> String {
    format!(
        r#"
[server]
rate_limit_per_s = 0

[[agent]]
name = "coach"
provider = "openai"
base_url = "{}"
model = "stand-in"
system_prompt = "You are a warm, concise coach."
mode = "reply"
max_retries = 0

[agent.turn]
speculate = false
window_complete_ms = 300
window_neutral_ms = 1500
window_partial_ms = 3000
window_hard_cap_ms = 8000
typing_cps = 1000
{extra_turn}
"#,
        stand_in.openai_base_url()
    )
}

/// pat (a person) and coach (the agent).
pub async fn create(server: &TestServer) -> Conversation {
    let (status, created) = server
        .post_raw(
            "/v1/conversations",
            None,
            json!({"participants": [
                {"name": "pat", "kind": "human"},
                {"name": "coach", "kind": "agent", "agent": "coach"}
            ]})
            .to_string()
            .into(),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    Conversation::from_created(&created)
}

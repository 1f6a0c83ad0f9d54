//! The one table of tools a model may call — name, description, argument schema — and the one
//! decoder of their arguments. The MCP handler lists and dispatches exactly these; an agent in
//! mode "actions" offers its model a subset of them, with the same words.
//!
//! Each tool is one action of SPEC.md section 2 (or a read: `history`, `whoami`); the descriptions
//! teach the protocol in a sentence or two (hear-while-writing, the held push, `check`'s limit).

use hark_core::protocol::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};

/// One tool as a model sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: &'static str,
    /// What it does, for the model.
    pub description: String,
    /// A JSON Schema object for its arguments.
    pub schema: Value,
    /// A JSON Schema object for its structured result, an error body included (MCP clients
    /// validate error results against it too).
    pub output_schema: Value,
}

/// The numbers the descriptions state, so that they say what this server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToolLimits {
    /// What `check` waits without `timeout_ms`.
    pub default_check_ms: u64,
    /// The longest `check` this door allows.
    pub max_check_ms: u64,
}

/// A decoded tool call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolCall {
    /// One of the actions.
    Act(Action),
    /// `history {after?, limit?}`.
    History {
        /// Messages after this seq.
        after: u64,
        /// At most this many.
        limit: Option<usize>,
    },
    /// `whoami`.
    Whoami,
}

/// Why a call could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolCallError {
    /// No tool has this name.
    Unknown(String),
    /// The arguments do not fit the tool's schema: serde's reason.
    BadArguments(String),
}

/// The tools an agent in mode "actions" writes with: the draft actions, without `check`
/// (the agent's loop waits itself) and the reads. A streaming agent's text goes into the draft
/// by itself, so it gets neither `append` nor `preview`.
pub fn for_agent(streaming: bool) -> Vec<Tool> {
    let wanted: &[&str] = if streaming {
        &["undo", "reset", "push"]
    } else {
        &["append", "preview", "undo", "reset", "push"]
    };
    // An agent never calls `check`, so the numbers in its description do not matter.
    let limits = ToolLimits {
        default_check_ms: 0,
        max_check_ms: 0,
    };
    table(&limits)
        .into_iter()
        .filter(|t| wanted.contains(&t.name))
        .collect()
}

/// The whole table, with the descriptions stating `limits`.
pub fn table(limits: &ToolLimits) -> Vec<Tool> {
    let no_arguments =
        || json!({"type": "object", "properties": {}, "additionalProperties": false});
    let seconds = limits.max_check_ms.div_ceil(1000);
    vec![
        Tool {
            name: "append",
            description: "Add text to the end of your private draft; nobody sees it until you \
                          push. Like every tool here, the result also shows messages that \
                          arrived since you last looked, so you hear others while you write: if \
                          one changes what you want to say, revise with undo or reset."
                .to_owned(),
            schema: json!({
                "type": "object",
                "properties": {
                    "text": {
                        "description": "The text to add to the end of your draft (segments are \
                                        joined exactly, without a separator, so include spaces \
                                        where you want them).",
                        "type": "string"
                    }
                },
                "required": ["text"],
                "additionalProperties": false
            }),
            output_schema: envelope_schema(),
        },
        Tool {
            name: "undo",
            description: "Remove the most recently appended segment of your draft and return its \
                          text. Also shows messages that arrived meanwhile."
                .to_owned(),
            schema: no_arguments(),
            output_schema: envelope_schema(),
        },
        Tool {
            name: "reset",
            description: "Discard your whole draft. Also shows messages that arrived meanwhile."
                .to_owned(),
            schema: no_arguments(),
            output_schema: envelope_schema(),
        },
        Tool {
            name: "preview",
            description: "Show the exact text push would send now (your draft's segments joined \
                          as they are). Also shows messages that arrived meanwhile."
                .to_owned(),
            schema: no_arguments(),
            output_schema: envelope_schema(),
        },
        Tool {
            name: "push",
            description: "Publish your draft as one message. If others wrote something you have \
                          not seen yet, the push is held instead: nothing is sent, your draft \
                          stays, and the new messages are shown; read them, then push again to \
                          send as is, or revise first. force=true skips that check; a client_id \
                          makes a retry safe (the same id never sends twice)."
                .to_owned(),
            schema: json!({
                "type": "object",
                "properties": {
                    "force": {
                        "description": "Send even if unseen messages arrived (default false: the \
                                        push is held so you read them).",
                        "type": ["boolean", "null"]
                    },
                    "client_id": {
                        "description": "A fresh random id for this message; pushing again with \
                                        the same id never sends twice.",
                        "type": ["string", "null"]
                    }
                },
                "additionalProperties": false
            }),
            output_schema: envelope_schema(),
        },
        Tool {
            name: "check",
            description: format!(
                "Wait for new messages: returns as soon as one arrives, or after timeout_ms \
                 (default {}, at most {}) saying nothing new. It never runs longer than {seconds} \
                 seconds because MCP clients drop longer calls: simply call it again to keep \
                 listening.",
                limits.default_check_ms, limits.max_check_ms
            ),
            schema: json!({
                "type": "object",
                "properties": {
                    "timeout_ms": {
                        "description": format!(
                            "How long to wait for a new message, in milliseconds (default {}, at \
                             most {}).",
                            limits.default_check_ms, limits.max_check_ms
                        ),
                        "type": ["integer", "null"],
                        "minimum": 0
                    }
                },
                "additionalProperties": false
            }),
            output_schema: envelope_schema(),
        },
        Tool {
            name: "history",
            description: format!(
                "Read past messages with seq greater than after (default 0), oldest first, at \
                 most limit (default {HISTORY_DEFAULT_LIMIT}, at most {HISTORY_MAX_LIMIT}). Does \
                 not change which messages count as new for you."
            ),
            schema: json!({
                "type": "object",
                "properties": {
                    "after": {
                        "description": "Return messages with a seq greater than this (default 0: \
                                        from the start).",
                        "type": ["integer", "null"],
                        "minimum": 0
                    },
                    "limit": {
                        "description": format!(
                            "How many messages at most (default {HISTORY_DEFAULT_LIMIT}, at most \
                             {HISTORY_MAX_LIMIT})."
                        ),
                        "type": ["integer", "null"],
                        "minimum": 0
                    }
                },
                "additionalProperties": false
            }),
            output_schema: history_schema(),
        },
        Tool {
            name: "whoami",
            description: "Who you are here: your name, the conversation's id and title, the other \
                          participants, the last message's seq and who is composing."
                .to_owned(),
            schema: no_arguments(),
            output_schema: whoami_schema(),
        },
    ]
}

/// A message as the wire writes it.
fn message_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "id": {"type": "string"},
            "from": {"type": "string"},
            "text": {"type": "string"},
            "sent_at": {"type": "string"},
            "client_id": {"type": "string"}
        },
        "required": ["seq", "id", "from", "text", "sent_at"]
    })
}

/// Read positions, as envelopes and descriptions list them.
fn receipts_schema() -> Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "participant": {"type": "string"},
                "read_up_to": {"type": "integer"}
            },
            "required": ["participant", "read_up_to"]
        }
    })
}

/// A result that is either `success` or the HTTP API's error body: a tool error carries the
/// error body as structured content, and clients validate it against the same schema.
fn or_error(success: Value) -> Value {
    let error = json!({
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"}
                },
                "required": ["code", "message"]
            }
        },
        "required": ["error"]
    });
    json!({"type": "object", "anyOf": [success, error]})
}

/// The common envelope (SPEC.md section 2), or an error.
fn envelope_schema() -> Value {
    or_error(json!({
        "type": "object",
        "properties": {
            "action": {"type": "string"},
            "result": {"type": "object"},
            "incoming": {"type": "array", "items": message_schema()},
            "more_incoming": {"type": "boolean"},
            "repeated": {"type": "array", "items": {"type": "integer"}},
            "receipts": receipts_schema(),
            "composing": {"type": "array", "items": {"type": "string"}},
            "draft": {
                "type": "object",
                "properties": {
                    "segments": {"type": "integer"},
                    "chars": {"type": "integer"}
                },
                "required": ["segments", "chars"]
            },
            "cursor": {"type": "integer"}
        },
        "required": [
            "action", "result", "incoming", "more_incoming", "receipts", "composing", "draft",
            "cursor"
        ]
    }))
}

/// `history`'s page, or an error.
fn history_schema() -> Value {
    or_error(json!({
        "type": "object",
        "properties": {
            "messages": {"type": "array", "items": message_schema()},
            "more": {"type": "boolean"}
        },
        "required": ["messages", "more"]
    }))
}

/// `whoami`'s answer (`GET /v1/whoami`), or an error.
fn whoami_schema() -> Value {
    let names = json!({"type": "array", "items": {"type": "string"}});
    or_error(json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "title": {"type": ["string", "null"]},
            "participants": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "agent": {"type": "string"}
                    },
                    "required": ["name", "kind"]
                }
            },
            "last_seq": {"type": "integer"},
            "receipts": receipts_schema(),
            "composing": names,
            "checking": names,
            "typing": names,
            "you": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"type": "string"}
                },
                "required": ["name", "kind"]
            }
        },
        "required": ["id", "participants", "last_seq", "you"]
    }))
}

/// The instructions an MCP client shows its model when it connects.
pub fn instructions(limits: &ToolLimits) -> String {
    format!(
        "You are a participant in a hark conversation. Write privately with append (and undo, \
         reset, preview), then publish with push. Every tool result also shows the messages that \
         arrived since you last looked, so you hear others while you write. A push is held when \
         new messages arrived that you have not seen: read them, then push again or revise. To \
         wait for others, call check; it returns after at most {} seconds, so simply call it \
         again.",
        limits.max_check_ms.div_ceil(1000)
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendArgs {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushArgs {
    #[serde(default)]
    force: Option<bool>,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckArgs {
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryArgs {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Decodes a call of tool `name`: arguments are checked as strictly as an HTTP body (unknown
/// fields refused). Missing arguments (`null`) mean `{}`. A whole number written as a float
/// (`100.0`, as some model providers emit integers) counts as that integer.
pub fn decode(name: &str, arguments: Value) -> Result<ToolCall, ToolCallError> {
    let arguments = match arguments {
        Value::Null => json!({}),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (key, whole_number(value)))
                .collect(),
        ),
        other => other,
    };
    fn args<T: for<'de> Deserialize<'de>>(arguments: Value) -> Result<T, ToolCallError> {
        serde_json::from_value(arguments).map_err(|e| ToolCallError::BadArguments(e.to_string()))
    }
    Ok(match name {
        "append" => {
            let AppendArgs { text } = args(arguments)?;
            ToolCall::Act(Action::Append { text })
        }
        "undo" => args::<NoArgs>(arguments).map(|_| ToolCall::Act(Action::Undo))?,
        "reset" => args::<NoArgs>(arguments).map(|_| ToolCall::Act(Action::Reset))?,
        "preview" => args::<NoArgs>(arguments).map(|_| ToolCall::Act(Action::Preview))?,
        "push" => {
            let PushArgs { force, client_id } = args(arguments)?;
            ToolCall::Act(Action::Push {
                force: force.unwrap_or(false),
                client_id,
            })
        }
        "check" => {
            let CheckArgs { timeout_ms } = args(arguments)?;
            ToolCall::Act(Action::Check { timeout_ms })
        }
        "history" => {
            let HistoryArgs { after, limit } = args(arguments)?;
            ToolCall::History {
                after: after.unwrap_or(0),
                limit,
            }
        }
        "whoami" => args::<NoArgs>(arguments).map(|_| ToolCall::Whoami)?,
        other => return Err(ToolCallError::Unknown(other.to_owned())),
    })
}

/// `value` as an integer if it is a float with no fractional part that an integer holds
/// exactly; anything else unchanged (and refused later if the schema wants an integer).
fn whole_number(value: Value) -> Value {
    /// Beyond 2^53 a float no longer holds every integer: `9007199254740993.0` is not exact.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let Value::Number(number) = &value else {
        return value;
    };
    match number.as_f64() {
        Some(f) if number.is_f64() && f.fract() == 0.0 && (0.0..=EXACT).contains(&f) => {
            Value::from(f as u64)
        }
        Some(f) if number.is_f64() && f.fract() == 0.0 && (-EXACT..0.0).contains(&f) => {
            Value::from(f as i64)
        }
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tool name, in the order the table lists them.
    const NAMES: [&str; 8] = [
        "append", "undo", "reset", "preview", "push", "check", "history", "whoami",
    ];

    const LIMITS: ToolLimits = ToolLimits {
        default_check_ms: 25_000,
        max_check_ms: 50_000,
    };

    #[test]
    fn the_table_names_every_tool_once_and_its_schemas_are_objects() {
        let table = table(&LIMITS);
        let names: Vec<&str> = table.iter().map(|t| t.name).collect();
        assert_eq!(names, NAMES);
        for tool in &table {
            assert_eq!(tool.schema["type"], "object", "{}", tool.name);
            assert_eq!(tool.schema["additionalProperties"], false, "{}", tool.name);
        }
        let check = table.iter().find(|t| t.name == "check").unwrap();
        assert!(check.description.contains("(default 25000, at most 50000)"));
        assert!(check.description.contains("longer than 50 seconds"));
        for tool in &table {
            assert_eq!(tool.output_schema["type"], "object", "{}", tool.name);
            assert_eq!(
                tool.output_schema["anyOf"][1]["required"],
                json!(["error"]),
                "{}: error results conform",
                tool.name
            );
        }
        let agent: Vec<&str> = for_agent(false).iter().map(|t| t.name).collect();
        assert_eq!(agent, ["append", "undo", "reset", "preview", "push"]);
        let streaming: Vec<&str> = for_agent(true).iter().map(|t| t.name).collect();
        assert_eq!(streaming, ["undo", "reset", "push"]);
    }

    #[test]
    fn every_tool_decodes_and_arguments_are_strict() {
        assert_eq!(
            decode("append", json!({"text": "hi"})),
            Ok(ToolCall::Act(Action::Append { text: "hi".into() }))
        );
        assert_eq!(
            decode("push", Value::Null),
            Ok(ToolCall::Act(Action::Push {
                force: false,
                client_id: None
            }))
        );
        assert_eq!(
            decode("history", json!({"limit": 2})),
            Ok(ToolCall::History {
                after: 0,
                limit: Some(2)
            })
        );
        assert_eq!(decode("whoami", json!({})), Ok(ToolCall::Whoami));
        for name in NAMES {
            // Every tool takes `{}` or says which argument it misses.
            match decode(name, json!({})) {
                Ok(_) => {}
                Err(ToolCallError::BadArguments(why)) => assert!(why.contains("missing field")),
                Err(e) => panic!("{name}: {e:?}"),
            }
        }
        let Err(ToolCallError::BadArguments(why)) = decode("push", json!({"forse": true})) else {
            panic!("a typo is refused");
        };
        assert!(why.contains("unknown field `forse`"), "{why}");
        assert_eq!(
            decode("send", json!({})),
            Err(ToolCallError::Unknown("send".into()))
        );
    }

    #[test]
    fn whole_numbers_sent_as_floats_are_integers() {
        assert_eq!(
            decode("check", json!({"timeout_ms": 100.0})),
            Ok(ToolCall::Act(Action::Check {
                timeout_ms: Some(100)
            }))
        );
        assert_eq!(
            decode("history", json!({"after": 3.0, "limit": 2e1})),
            Ok(ToolCall::History {
                after: 3,
                limit: Some(20)
            })
        );
        for refused in [json!(100.5), json!(-1.0), json!(1e300), json!("100")] {
            let decoded = decode("check", json!({ "timeout_ms": refused }));
            assert!(
                matches!(decoded, Err(ToolCallError::BadArguments(_))),
                "{refused}: {decoded:?}"
            );
        }
    }
}

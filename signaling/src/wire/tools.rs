//! Function tools a session declares (`session.tools`, `tool_choice`): checked where they
//! enter, carried as the client wrote them.

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Function tools a session may declare. Providers cap theirs at about this (OpenAI: 128); the
/// cap keeps one `session.update` from making every provider request huge.
pub const MAX_TOOLS: usize = 128;
/// A tool's `name`, as OpenAI and Gemini accept it: `^[a-zA-Z0-9_-]{1,64}$`.
pub const MAX_TOOL_NAME: usize = 64;

/// A function the model may call (`session.tools[i]`, OpenAI Realtime's shape). The client
/// runs it; voxrelay only carries the call and its output between the client and the provider.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

impl Tool {
    /// The OpenAI Realtime tool object (also what `session.updated` echoes).
    pub fn to_json(&self) -> Value {
        json!({"type": "function", "name": self.name, "description": self.description, "parameters": self.parameters})
    }
}

/// Validates `session.tools`. Errors name the offending index, OpenAI style (`invalid_value`).
pub fn parse_tools(tools: &[Value]) -> Result<Vec<Tool>, ApiError> {
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::bad_request("invalid_value", format!("session.tools: at most {MAX_TOOLS} tools")));
    }
    let mut out: Vec<Tool> = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let bad = |why: &str| ApiError::bad_request("invalid_value", format!("session.tools[{i}]: {why}"));
        let obj = t.as_object().ok_or_else(|| bad("must be an object"))?;
        match obj.get("type").and_then(Value::as_str) {
            Some("function") => {}
            _ => return Err(bad("type must be \"function\" (the only kind of tool a voice agent here can call)")),
        }
        let name = obj.get("name").and_then(Value::as_str).ok_or_else(|| bad("needs a string \"name\""))?;
        let name_ok =
            !name.is_empty() && name.len() <= MAX_TOOL_NAME && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(bad("name must be 1-64 characters of a-z, A-Z, 0-9, _ or -"));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(bad(&format!("duplicate tool name {name:?}")));
        }
        let description = match obj.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(d)) => d.clone(),
            Some(_) => return Err(bad("description must be a string")),
        };
        let parameters = match obj.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => return Err(bad("parameters must be a JSON Schema object")),
        };
        out.push(Tool { name: name.to_string(), description, parameters });
    }
    Ok(out)
}

/// Validates `session.tool_choice`: `"auto"`, `"none"`, `"required"` or
/// `{"type":"function","name":...}` naming a declared tool.
pub fn parse_tool_choice(choice: &Value, tools: &[Tool]) -> Result<Value, ApiError> {
    let bad = |why: String| ApiError::bad_request("invalid_value", format!("session.tool_choice: {why}"));
    match choice {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(|| bad("a function choice needs a \"name\"".into()))?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(bad(format!("{name:?} is not one of the session's tools")));
            }
            Ok(json!({"type": "function", "name": name}))
        }
        _ => Err(bad("must be \"auto\", \"none\", \"required\" or {\"type\":\"function\",\"name\":...}".into())),
    }
}

//! Function calling as the client sees it (OpenAI Realtime's shapes): the server events for a
//! call the agent made, and the book of calls still waiting for the client's
//! `function_call_output`. Pure data, no I/O; [`super::Conversation`] emits what this builds.
//!
//! A call's arguments reach us whole from every provider adapter, so they go out as one
//! `response.function_call_arguments.delta` followed by `.done`: the event sequence a client
//! expects, without pretending to stream what was not streamed to us.

use std::collections::VecDeque;

use voxrelay_signaling::events::{CallRef, IdSource, Item, ItemStatus, ServerEvent};

/// Calls remembered for their output. A client that never answers must not grow memory;
/// the oldest unanswered call is forgotten first (its late output is then `unknown_call_id`).
pub const MAX_OPEN_CALLS: usize = 64;

/// Calls the agent made that the client has not answered yet.
#[derive(Default)]
pub struct OpenCalls {
    ids: VecDeque<String>,
}

impl OpenCalls {
    pub fn open(&mut self, call_id: &str) {
        if self.ids.len() == MAX_OPEN_CALLS {
            self.ids.pop_front();
        }
        self.ids.push_back(call_id.to_string());
    }

    /// Whether `call_id` was open; it is closed now (one output per call).
    pub fn close(&mut self, call_id: &str) -> bool {
        match self.ids.iter().position(|c| c == call_id) {
            Some(i) => {
                self.ids.remove(i);
                true
            }
            None => false,
        }
    }
}

/// A function call in a response, as the client sees it.
pub struct CallEvents {
    pub item_id: String,
    /// In order.
    pub events: Vec<ServerEvent>,
    /// The completed item, for `response.done`'s `output`.
    pub item: Item,
}

/// The events of one call at `output_index` of response `response_id`; `previous_item_id` is
/// the conversation item it follows. The call's item id comes from `ids`.
pub fn call_events(
    ids: &mut IdSource,
    response_id: &str,
    output_index: u32,
    previous_item_id: Option<&str>,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> CallEvents {
    let item_id = ids.item();
    let added = Item::function_call(&item_id, ItemStatus::InProgress, call_id, name, "");
    let done = Item::function_call(&item_id, ItemStatus::Completed, call_id, name, arguments);
    let call = CallRef { response_id: response_id.into(), item_id: item_id.clone(), output_index, call_id: call_id.into() };
    let events = vec![
        ServerEvent::OutputItemAdded { response_id: response_id.into(), output_index, item: added.clone() },
        ServerEvent::ItemCreated { previous_item_id: previous_item_id.map(String::from), item: added },
        ServerEvent::FunctionCallArgumentsDelta { call: call.clone(), delta: arguments.into() },
        ServerEvent::FunctionCallArgumentsDone { call, name: name.into(), arguments: arguments.into() },
        ServerEvent::OutputItemDone { response_id: response_id.into(), output_index, item: done.clone() },
    ];
    CallEvents { item_id, events, item: done }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use voxrelay_signaling::events::Dialect;

    use super::*;

    /// Events as a beta client reads them.
    fn wire(events: &[ServerEvent]) -> Vec<Value> {
        events.iter().map(|e| serde_json::from_str(&e.to_json(Dialect::Beta, "event_1")).unwrap()).collect()
    }

    #[test]
    fn a_call_is_announced_streamed_and_closed_once() {
        let mut ids = IdSource::sequential();
        let c = call_events(&mut ids, "resp_1", 1, Some("item_0"), "call_a", "get_weather", r#"{"city":"Oslo"}"#);
        let events = wire(&c.events);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.output_item.added",
                "conversation.item.created",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done"
            ]
        );
        assert_eq!(events[0]["item"]["arguments"], "");
        assert_eq!(events[2]["delta"], r#"{"city":"Oslo"}"#);
        assert_eq!(events[3]["name"], "get_weather");
        assert_eq!(events[3]["item_id"], c.item_id.as_str());
        assert_eq!(c.item_id, "item_1", "the call's item id comes from the id source");
        assert_eq!(serde_json::to_value(&c.item).unwrap()["status"], "completed");

        let mut open = OpenCalls::default();
        open.open("call_a");
        assert!(open.close("call_a"));
        assert!(!open.close("call_a"), "one output per call");
        for i in 0..=MAX_OPEN_CALLS {
            open.open(&format!("c{i}"));
        }
        assert!(!open.close("c0"), "the oldest unanswered call is forgotten first");
        assert!(open.close(&format!("c{MAX_OPEN_CALLS}")));
    }

    /// An agent whose every response is one function call, and which records outputs.
    struct Caller {
        pending: VecDeque<crate::agent::AgentOutput>,
        outputs: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    }

    impl crate::agent::Agent for Caller {
        fn on_audio(&mut self, _: voxrelay_media::AudioTime, _: &[i16; voxrelay_media::SAMPLES_24K]) {}
        fn on_speech_started(&mut self, _: voxrelay_media::AudioTime) {}
        fn on_committed(&mut self, _: voxrelay_media::AudioTime, _: &str) {}
        fn on_input_cleared(&mut self) {}
        fn on_text(&mut self, _: &str, _: &str) {}
        fn on_function_output(&mut self, call_id: &str, output: &str) {
            self.outputs.lock().unwrap().push((call_id.into(), output.into()));
        }
        fn start_response(&mut self, _: u64, _: &voxrelay_signaling::events::ResponseOptions) {
            let call = crate::agent::AgentOutput::FunctionCall { call_id: "call_x".into(), name: "f".into(), arguments: "{}".into() };
            self.pending.extend([call, crate::agent::AgentOutput::Done]);
        }
        fn cancel_response(&mut self, _: u64, _: std::time::Duration) {}
        fn poll_output(&mut self) -> Option<crate::agent::AgentOutput> {
            self.pending.pop_front()
        }
    }

    fn conversation(agent: Box<dyn crate::agent::Agent>) -> super::super::Conversation {
        use voxrelay_signaling::SessionConfig;
        super::super::Conversation::new(Dialect::Ga, "sess".into(), SessionConfig::default(), agent, IdSource::sequential())
    }

    #[test]
    fn a_response_ends_with_the_call_and_only_its_output_is_accepted() {
        let outputs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut c = conversation(Box::new(Caller { pending: VecDeque::new(), outputs: outputs.clone() }));
        let now = std::time::Instant::now();
        c.on_client_text(r#"{"type":"session.update","session":{"type":"realtime","tools":[{"type":"function","name":"f","parameters":{"type":"object"}}]}}"#, now);
        let updated = c.take_json().pop().unwrap();
        assert_eq!(updated["session"]["tools"][0]["name"], "f", "{updated}");
        c.on_client_text(r#"{"type":"response.create"}"#, now);
        assert!(c.next_agent_frame(now).is_none(), "no audio: the response completes at once");
        let events = c.take_json();
        let args = events.iter().find(|e| e["type"] == "response.function_call_arguments.done").expect("arguments done");
        assert_eq!((args["call_id"].as_str(), args["output_index"].as_u64()), (Some("call_x"), Some(1)));
        assert_eq!((args["response_id"].as_str(), args["item_id"].as_str()), (Some("resp_1"), Some("item_2")), "item_1 is the message");
        let done = events.last().unwrap();
        assert_eq!(done["type"], "response.done");
        assert_eq!(done["response"]["output"][1]["type"], "function_call");
        assert_eq!(done["response"]["output"][1]["call_id"], "call_x");

        c.on_client_text(
            r#"{"type":"conversation.item.create","event_id":"e1","item":{"type":"function_call_output","call_id":"nope","output":"x"}}"#,
            now,
        );
        c.on_client_text(
            r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_x","output":"{\"ok\":true}"}}"#,
            now,
        );
        c.on_client_text(
            r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_x","output":"again"}}"#,
            now,
        );
        let events = c.take_json();
        assert_eq!(events[0]["error"]["code"], "unknown_call_id");
        assert_eq!(events[0]["error"]["event_id"], "e1");
        assert_eq!(events[1]["type"], "conversation.item.added");
        assert_eq!(events[1]["item"]["type"], "function_call_output");
        assert_eq!((events[1]["item"]["id"].as_str(), events[1]["previous_item_id"].as_str()), (Some("item_3"), Some("item_2")));
        assert_eq!(events[2]["error"]["code"], "unknown_call_id", "one output per call");
        assert_eq!(*outputs.lock().unwrap(), [("call_x".to_string(), r#"{"ok":true}"#.to_string())]);
    }

    #[test]
    fn the_echo_agent_makes_no_calls_so_any_output_is_an_error() {
        let mut c = conversation(Box::new(crate::agent::EchoAgent::new()));
        let now = std::time::Instant::now();
        c.on_client_text(
            r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_1","output":"x"}}"#,
            now,
        );
        c.on_client_text(r#"{"type":"session.update","session":{"tools":[{"type":"function","name":"bad name"}]}}"#, now);
        let events = c.take_json();
        let codes: Vec<&str> = events.iter().map(|e| e["error"]["code"].as_str().unwrap_or("-")).collect();
        assert_eq!(codes, ["unknown_call_id", "invalid_value"]);
    }
}

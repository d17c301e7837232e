//! Where a call's protocol ids come from (items, responses, events): an input to the
//! conversation like time, so the logic never draws randomness itself. Production ids are random
//! and unguessable; tests use sequential ones and assert exact events.

use crate::auth::random_id;

/// A source of `item_…`, `resp_…` and `event_…` ids.
#[derive(Debug)]
pub struct IdSource {
    /// `None`: random ids. `Some`: the last number handed out per kind.
    sequential: Option<[u64; 3]>,
}

#[derive(Clone, Copy)]
enum Kind {
    Item,
    Response,
    Event,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Item => "item_",
            Kind::Response => "resp_",
            Kind::Event => "event_",
        }
    }
}

impl IdSource {
    /// Random ids (`item_` + 24 alphanumerics): what every call uses.
    pub fn random() -> Self {
        Self { sequential: None }
    }

    /// `item_1`, `item_2`, …, `resp_1`, …, `event_1`, …: each kind counts from 1. For tests and
    /// reproducible traces; never for a live call (the ids would be guessable).
    pub fn sequential() -> Self {
        Self { sequential: Some([0; 3]) }
    }

    pub fn item(&mut self) -> String {
        self.next(Kind::Item)
    }

    pub fn response(&mut self) -> String {
        self.next(Kind::Response)
    }

    pub fn event(&mut self) -> String {
        self.next(Kind::Event)
    }

    fn next(&mut self, kind: Kind) -> String {
        match &mut self.sequential {
            None => random_id(kind.prefix()),
            Some(counters) => {
                let n = &mut counters[kind as usize];
                *n += 1;
                format!("{}{n}", kind.prefix())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_count_per_kind_and_random_ones_keep_their_prefix() {
        let mut ids = IdSource::sequential();
        assert_eq!([ids.item(), ids.item(), ids.response(), ids.event(), ids.item()], ["item_1", "item_2", "resp_1", "event_1", "item_3"]);
        let mut ids = IdSource::random();
        let (a, b) = (ids.item(), ids.item());
        assert!(a.starts_with("item_") && a.len() == 5 + 24 && a != b, "{a} {b}");
        assert!(ids.response().starts_with("resp_") && ids.event().starts_with("event_"));
    }
}

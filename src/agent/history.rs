//! The dialogue a provider agent keeps for its model: (role, text) turns, oldest first, within a
//! character budget (newest kept), to send with each request or replay after a reconnect.

use std::collections::VecDeque;

/// ≈ 4 characters per token: about 4k tokens of context.
pub const HISTORY_BUDGET_CHARS: usize = 16_000;

#[derive(Default)]
pub struct Dialogue {
    turns: VecDeque<(&'static str, String)>,
}

impl Dialogue {
    /// Adds a turn (trimmed; empty text is no turn) and drops the oldest beyond the budget.
    pub fn push(&mut self, role: &'static str, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        self.turns.push_back((role, text.to_string()));
        let mut total: usize = self.turns.iter().map(|(_, t)| t.len()).sum();
        while total > HISTORY_BUDGET_CHARS && self.turns.len() > 1 {
            total -= self.turns.pop_front().map_or(0, |(_, t)| t.len());
        }
    }

    /// Replaces the last turn, if it is `role` saying `old`, by `new` (e.g. the heard part of an
    /// answer that was remembered whole).
    pub fn replace_last(&mut self, role: &'static str, old: &str, new: &str) {
        if self.turns.back().is_some_and(|(r, t)| *r == role && t == old.trim()) {
            self.turns.pop_back();
        }
        self.push(role, new);
    }

    pub fn turns(&self) -> &VecDeque<(&'static str, String)> {
        &self.turns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_within_budget_and_replaces_the_last() {
        let mut d = Dialogue::default();
        d.push("user", "  ");
        assert!(d.turns().is_empty());
        for _ in 0..40 {
            d.push("user", &"x".repeat(1000));
        }
        assert_eq!(d.turns().len(), HISTORY_BUDGET_CHARS / 1000);
        d.push("assistant", " all of it ");
        d.replace_last("assistant", "all of it", "all…");
        assert_eq!(d.turns().back().unwrap().1, "all…");
    }
}

//! Where a new 1:1 call goes: the node with the fewest calls and participants, as the nodes
//! registered at their last upkeep plus what this node has placed on each since (so a burst of
//! calls between two upkeeps spreads instead of piling onto the node that looked emptiest).
//! This node counts with its live load; a tie keeps the call here (no hop); draining nodes take
//! none.

use std::collections::HashMap;

use super::NodeLoad;

/// A node as its registration says.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub id: String,
    pub url: String,
    pub load: usize,
    pub draining: bool,
}

#[derive(Debug, Default)]
pub struct View {
    pub nodes: Vec<NodeView>,
    /// Calls placed on each other node since `nodes` was read.
    placed: HashMap<String, usize>,
}

impl View {
    pub fn new(mut nodes: Vec<NodeView>) -> Self {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        View { nodes, placed: HashMap::new() }
    }

    pub fn url_of(&self, id: &str) -> Option<String> {
        self.nodes.iter().find(|n| n.id == id).map(|n| n.url.clone())
    }

    /// The least-loaded other node when it has fewer than this one (`me`), counted as placed.
    pub fn place(&mut self, my_id: &str, me: NodeLoad) -> Option<NodeView> {
        let mine = if me.draining { usize::MAX } else { me.load };
        let best = self
            .nodes
            .iter()
            .filter(|n| n.id != my_id && !n.draining)
            .map(|n| (n.load + self.placed.get(&n.id).copied().unwrap_or(0), n))
            .min_by_key(|(load, _)| *load)
            .filter(|(load, _)| *load < mine)
            .map(|(_, n)| n.clone())?;
        *self.placed.entry(best.id.clone()).or_default() += 1;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, load: usize, draining: bool) -> NodeView {
        NodeView { id: id.into(), url: format!("http://{id}"), load, draining }
    }

    fn me(load: usize) -> NodeLoad {
        NodeLoad { load, draining: false }
    }

    #[test]
    fn calls_go_to_the_least_loaded_node_and_a_burst_spreads() {
        let mut view = View::new(vec![node("node_c", 0, false), node("node_a", 0, false), node("node_b", 0, false)]);
        assert_eq!(view.place("node_a", me(0)), None, "a tie stays here");
        // This node now has a call; B and C had none at their last upkeep.
        assert_eq!(view.place("node_a", me(1)).map(|n| n.id), Some("node_b".into()));
        assert_eq!(view.place("node_a", me(1)).map(|n| n.id), Some("node_c".into()), "B counts the call placed on it");
        assert_eq!(view.place("node_a", me(1)), None);
        assert_eq!(view.place("node_a", me(5)).map(|n| n.id), Some("node_b".into()));
        // Fresh registrations replace what was counted.
        let mut view = View::new(vec![node("node_a", 9, false), node("node_b", 3, false), node("node_c", 7, false)]);
        assert_eq!(view.place("node_a", me(9)).map(|n| n.url), Some("http://node_b".into()));
        assert_eq!(view.url_of("node_c").as_deref(), Some("http://node_c"));
        assert_eq!(view.url_of("node_x"), None);
    }

    #[test]
    fn draining_nodes_take_no_calls() {
        let mut view = View::new(vec![node("node_a", 0, false), node("node_b", 0, true), node("node_c", 4, false)]);
        assert_eq!(view.place("node_a", me(2)), None, "B drains; C has more");
        let draining = NodeLoad { load: 0, draining: true };
        assert_eq!(view.place("node_a", draining).map(|n| n.id), Some("node_c".into()), "a draining node passes its new calls on");
        let mut alone = View::new(vec![node("node_a", 0, true)]);
        assert_eq!(alone.place("node_a", draining), None, "nowhere else: here, where admission answers");
    }
}

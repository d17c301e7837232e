//! Cuts a token stream into sentences for text-to-speech, so the voice starts on the first
//! sentence instead of waiting for the whole reply. A run-on sentence is cut at a comma or
//! space past [`MAX_CHARS`] so no chunk waits long.

pub const MAX_CHARS: usize = 160;

#[derive(Default)]
pub struct Sentences {
    buf: String,
}

impl Sentences {
    /// Adds text; returns the sentences it completed.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            let bytes = self.buf.as_bytes();
            let end = bytes.windows(2).position(|w| matches!(w[0], b'.' | b'!' | b'?' | b'\n') && w[1].is_ascii_whitespace()).map(|i| i + 1);
            let cut = match end {
                Some(i) => i,
                None if self.buf.len() > MAX_CHARS => {
                    let head = &self.buf[..floor_boundary(&self.buf, MAX_CHARS)];
                    match head.rfind(", ").map(|i| i + 1).or_else(|| head.rfind(' ')) {
                        Some(i) if i > 0 => i,
                        _ => head.len(),
                    }
                }
                None => break,
            };
            let sentence: String = self.buf.drain(..cut).collect();
            if !sentence.trim().is_empty() {
                out.push(format!("{} ", sentence.trim()));
            }
        }
        out
    }

    /// Whatever is left when the reply ends.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        (!rest.trim().is_empty()).then(|| format!("{} ", rest.trim()))
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_come_out_as_soon_as_they_end() {
        let mut s = Sentences::default();
        assert!(s.push("Hello").is_empty());
        assert_eq!(s.push(" there. How"), ["Hello there. "]);
        assert_eq!(s.push(" are you? Fine!\nOk"), ["How are you? ", "Fine! "]);
        assert!(s.push(" 3.5 is a number").is_empty(), "a decimal point is not an end");
        assert_eq!(s.finish().as_deref(), Some("Ok 3.5 is a number "));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn run_on_text_is_cut_at_a_comma_or_space() {
        let mut s = Sentences::default();
        let long = "word, ".repeat(40);
        let out = s.push(&long);
        assert!(!out.is_empty());
        assert!(out.iter().all(|c| c.len() <= MAX_CHARS + 1 && c.trim_end().ends_with(',')), "{out:?}");
        let mut u = Sentences::default();
        assert!(!u.push(&"é".repeat(200)).is_empty(), "no panic at a multi-byte boundary");
    }
}

//! `MediaError`: everything that can fail in voxrelay-media, which is only session setup (codec
//! creation, pool capacity). Must never be produced per frame: the per-tick path counts failures
//! in `SessionStats` instead of returning them.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// libopus refused to create or configure a codec state.
    Codec(String),
    /// Every worker is at its session capacity.
    Full,
    /// The requested sample-rate pair is not an integer ratio this crate supports.
    UnsupportedRate { from: u32, to: u32 },
    /// The worker pool has shut down (or its thread died), so it cannot take sessions.
    WorkerGone,
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::Codec(msg) => write!(f, "opus codec error: {msg}"),
            MediaError::Full => write!(f, "all audio workers are at session capacity"),
            MediaError::UnsupportedRate { from, to } => write!(f, "unsupported resampling ratio {from} Hz -> {to} Hz"),
            MediaError::WorkerGone => write!(f, "audio worker pool is shut down"),
        }
    }
}

impl std::error::Error for MediaError {}

impl From<voxrelay_opus::ErrorCode> for MediaError {
    fn from(e: voxrelay_opus::ErrorCode) -> Self {
        MediaError::Codec(e.to_string())
    }
}

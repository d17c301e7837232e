//! The server's integration tests, one module per concern, built as one binary: 40 binaries
//! each linking the whole server took minutes of a cold build, and `cargo test` runs binaries
//! one after another, so tests that mostly wait on real-time audio could not overlap across
//! files. Run one file's tests with `cargo test --test integration echo_call::`.
//! How many run at once: `.cargo/config.toml` (`RUST_TEST_THREADS`); tests that must not share
//! the machine's real time with each other hold a lock of their own (e.g. twilio_bridge's).

mod common;
/// Local stand-ins for the AI providers and the phone line, each built once and shared by the
/// modules that use it.
mod fakes {
    pub mod cascade;
    pub mod gemini_live;
    pub mod openai_realtime;
    pub mod phone_line;
}

mod abuse_limits;
mod bad_input;
mod barge_in;
mod browser_page;
mod call_end;
mod call_history;
mod cascade;
mod churn;
mod cli;
mod cluster;
mod drain;
mod dtx_call;
mod echo_call;
mod gemini_live;
mod ice_tcp;
mod loadgen;
mod module_tree;
mod network_faults;
mod openai_realtime;
mod plain_rtp;
mod realtime_ws;
mod room_agent;
mod room_api;
mod room_ice;
mod room_phone;
mod room_speakers;
mod rooms;
mod sdk_interop;
mod talk;
mod turn_cli;
mod turn_core;
mod turn_echo_relay;
mod turn_fuzz;
mod turn_relay;
mod twilio_bridge;
mod web_page;
mod whip_whep;

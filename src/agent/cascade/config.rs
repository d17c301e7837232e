//! Settings of the `cascade` agent: which speech-to-text, language model and text-to-speech
//! providers it chains, and theirs (`[providers.cascade]`, `[providers.deepgram]` or
//! `[providers.assemblyai]`,
//! `[providers.anthropic]`, `[providers.elevenlabs]`; the OpenAI LLM reuses `[providers.openai]`'s key).

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use crate::agent::providers::{CONNECT_TIMEOUT, ProvidersFile, resolve_key};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeSection {
    /// `deepgram` (the default) or `assemblyai`.
    pub stt: Option<String>,
    /// `openai` (chat completions, SSE) or `anthropic` (messages, SSE).
    pub llm: Option<String>,
    /// `elevenlabs` (stream-input WebSocket).
    pub tts: Option<String>,
    pub llm_model: Option<String>,
    /// HTTP(S) base, e.g. `https://api.openai.com/v1` or `https://api.anthropic.com/v1`.
    pub llm_base_url: Option<String>,
    /// Most tokens per reply (a spoken answer should be short).
    pub max_tokens: Option<u32>,
    pub connect_timeout_secs: Option<u64>,
}

/// A keyed provider used by the cascade.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    pub api_key_env: Option<String>,
    pub api_key_file: Option<String>,
    pub model: Option<String>,
    pub base_url: Option<String>,
    /// ElevenLabs voice id.
    pub voice: Option<String>,
    /// Deepgram language (BCP-47); AssemblyAI picks the language by its `model`.
    pub language: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SttProvider {
    Deepgram,
    AssemblyAi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmDialect {
    OpenAi,
    Anthropic,
}

#[derive(Clone)]
pub struct CascadeConfig {
    pub stt: SttProvider,
    pub stt_key: String,
    pub stt_model: String,
    pub stt_url: String,
    pub stt_language: String,
    pub llm: LlmDialect,
    pub llm_key: String,
    pub llm_model: String,
    pub llm_base_url: String,
    pub max_tokens: u32,
    pub tts_key: String,
    pub tts_voice: String,
    pub tts_model: String,
    pub tts_base_url: String,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for CascadeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CascadeConfig")
            .field("stt", &(self.stt, &self.stt_url))
            .field("llm", &(self.llm, &self.llm_model, &self.llm_base_url))
            .field("tts", &(&self.tts_base_url, &self.tts_voice))
            .finish_non_exhaustive()
    }
}

pub const DEEPGRAM_URL: &str = "wss://api.deepgram.com/v1/listen";
pub const DEEPGRAM_MODEL: &str = "nova-3";
pub const ASSEMBLYAI_URL: &str = "wss://streaming.assemblyai.com/v3/ws";
/// Universal-Streaming requires a model; this is its English one.
pub const ASSEMBLYAI_MODEL: &str = "universal-streaming-english";
pub const OPENAI_CHAT_URL: &str = "https://api.openai.com/v1";
pub const OPENAI_CHAT_MODEL: &str = "gpt-4o-mini";
pub const ANTHROPIC_URL: &str = "https://api.anthropic.com/v1";
pub const ANTHROPIC_MODEL: &str = "claude-3-5-haiku-latest";
pub const ELEVENLABS_URL: &str = "wss://api.elevenlabs.io";
pub const ELEVENLABS_MODEL: &str = "eleven_flash_v2_5";
/// "Rachel", one of ElevenLabs' premade voices.
pub const ELEVENLABS_VOICE: &str = "21m00Tcm4TlvDq8ikWAM";

fn ws_url(name: &str, url: String) -> anyhow::Result<String> {
    if !(url.starts_with("wss://") || url.starts_with("ws://")) {
        bail!("providers.{name}.base_url: expected a ws:// or wss:// URL, got {url:?}");
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// `Ok(Ok(config))`, `Ok(Err(why not configured))`, or `Err` for a configuration mistake.
pub fn resolve(file: &ProvidersFile, openai_key: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Result<CascadeConfig, String>> {
    let c = file.cascade.clone().unwrap_or_default();
    let stt = match c.stt.as_deref().unwrap_or("deepgram") {
        "deepgram" => SttProvider::Deepgram,
        "assemblyai" => SttProvider::AssemblyAi,
        other => bail!("providers.cascade.stt: expected \"deepgram\" or \"assemblyai\", got {other:?}"),
    };
    let llm = match c.llm.as_deref().unwrap_or("openai") {
        "openai" => LlmDialect::OpenAi,
        "anthropic" => LlmDialect::Anthropic,
        other => bail!("providers.cascade.llm: expected \"openai\" or \"anthropic\", got {other:?}"),
    };
    let tts = c.tts.as_deref().unwrap_or("elevenlabs");
    if tts != "elevenlabs" {
        bail!("providers.cascade.tts: {tts:?} is not supported (supported: \"elevenlabs\")");
    }
    let (stt_name, stt_env, stt_section, stt_url, stt_model) = match stt {
        SttProvider::Deepgram => ("deepgram", "DEEPGRAM_API_KEY", file.deepgram.clone(), DEEPGRAM_URL, DEEPGRAM_MODEL),
        SttProvider::AssemblyAi => ("assemblyai", "ASSEMBLYAI_API_KEY", file.assemblyai.clone(), ASSEMBLYAI_URL, ASSEMBLYAI_MODEL),
    };
    let dg = stt_section.unwrap_or_default();
    let el = file.elevenlabs.clone().unwrap_or_default();
    let an = file.anthropic.clone().unwrap_or_default();
    let mut missing = Vec::new();
    let stt_key = resolve_key(stt_name, dg.api_key_env.as_deref().unwrap_or(stt_env), dg.api_key_file.as_deref(), env)?
        .map_err(|why| missing.push(why))
        .ok();
    let tts_key = resolve_key("elevenlabs", el.api_key_env.as_deref().unwrap_or("ELEVENLABS_API_KEY"), el.api_key_file.as_deref(), env)?
        .map_err(|why| missing.push(why))
        .ok();
    let llm_key = match llm {
        LlmDialect::OpenAi => openai_key.map(String::from).or_else(|| {
            missing.push("set OPENAI_API_KEY or providers.openai.api_key_file".into());
            None
        }),
        LlmDialect::Anthropic => {
            resolve_key("anthropic", an.api_key_env.as_deref().unwrap_or("ANTHROPIC_API_KEY"), an.api_key_file.as_deref(), env)?
                .map_err(|why| missing.push(why))
                .ok()
        }
    };
    let (Some(stt_key), Some(tts_key), Some(llm_key)) = (stt_key, tts_key, llm_key) else {
        return Ok(Err(missing.join("; ")));
    };
    let (default_url, default_model) = match llm {
        LlmDialect::OpenAi => (OPENAI_CHAT_URL, OPENAI_CHAT_MODEL),
        LlmDialect::Anthropic => (ANTHROPIC_URL, ANTHROPIC_MODEL),
    };
    let llm_base_url = c.llm_base_url.unwrap_or_else(|| default_url.into());
    if !(llm_base_url.starts_with("https://") || llm_base_url.starts_with("http://")) {
        bail!("providers.cascade.llm_base_url: expected an http(s):// URL, got {llm_base_url:?}");
    }
    Ok(Ok(CascadeConfig {
        stt,
        stt_key,
        stt_model: dg.model.unwrap_or_else(|| stt_model.into()),
        stt_url: ws_url(stt_name, dg.base_url.unwrap_or_else(|| stt_url.into()))?,
        stt_language: dg.language.unwrap_or_else(|| "en".into()),
        llm,
        llm_key,
        llm_model: c.llm_model.unwrap_or_else(|| default_model.into()),
        llm_base_url: llm_base_url.trim_end_matches('/').to_string(),
        max_tokens: c.max_tokens.unwrap_or(400),
        tts_key,
        tts_voice: el.voice.unwrap_or_else(|| ELEVENLABS_VOICE.into()),
        tts_model: el.model.unwrap_or_else(|| ELEVENLABS_MODEL.into()),
        tts_base_url: ws_url("elevenlabs", el.base_url.unwrap_or_else(|| ELEVENLABS_URL.into()))?,
        connect_timeout: c.connect_timeout_secs.map_or(CONNECT_TIMEOUT, Duration::from_secs),
    }))
}

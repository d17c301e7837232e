//! Provider settings: the `[providers.*]` sections of `voxrelay.toml`. Keys are resolved once at
//! start (from an environment variable or a file) and stay on the server; a session only names
//! the agent. A provider whose key cannot be found is "not configured", and sessions asking for
//! it get a 400 naming what is missing.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// `[providers]` as written in the config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersFile {
    #[serde(default)]
    pub openai: Option<OpenAiSection>,
    #[serde(default)]
    pub gemini: Option<GeminiSection>,
    #[serde(default)]
    pub cascade: Option<crate::agent::cascade::CascadeSection>,
    #[serde(default)]
    pub deepgram: Option<crate::agent::cascade::ProviderSection>,
    #[serde(default)]
    pub assemblyai: Option<crate::agent::cascade::ProviderSection>,
    #[serde(default)]
    pub anthropic: Option<crate::agent::cascade::ProviderSection>,
    #[serde(default)]
    pub elevenlabs: Option<crate::agent::cascade::ProviderSection>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiSection {
    /// Environment variable holding the key (default `GEMINI_API_KEY`).
    pub api_key_env: Option<String>,
    pub api_key_file: Option<String>,
    pub model: Option<String>,
    pub voice: Option<String>,
    pub base_url: Option<String>,
    pub connect_timeout_secs: Option<u64>,
}

/// A ready-to-use Gemini Live configuration.
#[derive(Clone)]
pub struct GeminiConfig {
    pub api_key: String,
    pub model: String,
    pub voice: String,
    pub base_url: String,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeminiConfig").field("model", &self.model).field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

pub const GEMINI_URL: &str =
    "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
pub const GEMINI_MODEL: &str = "models/gemini-live-2.5-flash-preview";
pub const GEMINI_VOICE: &str = "Puck";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSection {
    /// Environment variable holding the key (default `OPENAI_API_KEY`).
    pub api_key_env: Option<String>,
    /// File holding the key (wins over the variable; for container secrets).
    pub api_key_file: Option<String>,
    pub model: Option<String>,
    pub voice: Option<String>,
    /// WebSocket endpoint; tests point it at a local fake.
    pub base_url: Option<String>,
    /// Upstream event naming: `ga` (default) or `beta` (sends `OpenAI-Beta: realtime=v1`).
    pub dialect: Option<String>,
    /// Model for caller transcripts when the session asks for `input_audio_transcription`.
    pub transcription_model: Option<String>,
    pub connect_timeout_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenAiDialect {
    Ga,
    Beta,
}

/// A ready-to-use OpenAI Realtime configuration (the key is resolved).
#[derive(Clone)]
pub struct OpenAiConfig {
    pub api_key: String,
    pub model: String,
    pub voice: String,
    pub base_url: String,
    pub dialect: OpenAiDialect,
    pub transcription_model: String,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for OpenAiConfig {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig").field("model", &self.model).field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

pub const OPENAI_URL: &str = "wss://api.openai.com/v1/realtime";
pub const OPENAI_MODEL: &str = "gpt-realtime";
pub const OPENAI_VOICE: &str = "alloy";
pub const OPENAI_TRANSCRIPTION_MODEL: &str = "gpt-4o-mini-transcribe";
/// A provider that has not answered the WebSocket handshake by then is treated as down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every provider the server can use, resolved.
#[derive(Clone, Debug, Default)]
pub struct Providers {
    pub openai: Option<OpenAiConfig>,
    pub gemini: Option<GeminiConfig>,
    pub cascade: Option<crate::agent::cascade::CascadeConfig>,
    /// Why each unconfigured provider is off, for the 400 a session gets.
    pub missing: Vec<(&'static str, String)>,
}

impl Providers {
    /// Resolves the file's sections (or the defaults, which read the providers' usual
    /// environment variables). A section that names a key file that cannot be read is an error:
    /// the operator asked for that provider.
    pub fn resolve(file: &ProvidersFile) -> anyhow::Result<Self> {
        Self::resolve_with(file, &|name| std::env::var(name).ok())
    }

    pub fn resolve_with(file: &ProvidersFile, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut p = Providers::default();
        let oa = file.openai.clone().unwrap_or_default();
        match resolve_key("openai", oa.api_key_env.as_deref().unwrap_or("OPENAI_API_KEY"), oa.api_key_file.as_deref(), env)? {
            Ok(api_key) => {
                let dialect = match oa.dialect.as_deref().unwrap_or("ga") {
                    "ga" => OpenAiDialect::Ga,
                    "beta" => OpenAiDialect::Beta,
                    other => bail!("providers.openai.dialect: expected \"ga\" or \"beta\", got {other:?}"),
                };
                let base_url = oa.base_url.unwrap_or_else(|| OPENAI_URL.into());
                if !(base_url.starts_with("wss://") || base_url.starts_with("ws://")) {
                    bail!("providers.openai.base_url: expected a ws:// or wss:// URL, got {base_url:?}");
                }
                p.openai = Some(OpenAiConfig {
                    api_key,
                    model: oa.model.unwrap_or_else(|| OPENAI_MODEL.into()),
                    voice: oa.voice.unwrap_or_else(|| OPENAI_VOICE.into()),
                    base_url,
                    dialect,
                    transcription_model: oa.transcription_model.unwrap_or_else(|| OPENAI_TRANSCRIPTION_MODEL.into()),
                    connect_timeout: oa.connect_timeout_secs.map_or(CONNECT_TIMEOUT, Duration::from_secs),
                });
            }
            Err(why) => p.missing.push(("openai-realtime", why)),
        }
        let gm = file.gemini.clone().unwrap_or_default();
        match resolve_key("gemini", gm.api_key_env.as_deref().unwrap_or("GEMINI_API_KEY"), gm.api_key_file.as_deref(), env)? {
            Ok(api_key) => {
                let base_url = gm.base_url.unwrap_or_else(|| GEMINI_URL.into());
                if !(base_url.starts_with("wss://") || base_url.starts_with("ws://")) {
                    bail!("providers.gemini.base_url: expected a ws:// or wss:// URL, got {base_url:?}");
                }
                let model = gm.model.unwrap_or_else(|| GEMINI_MODEL.into());
                p.gemini = Some(GeminiConfig {
                    api_key,
                    // The API wants the resource name.
                    model: if model.starts_with("models/") { model } else { format!("models/{model}") },
                    voice: gm.voice.unwrap_or_else(|| GEMINI_VOICE.into()),
                    base_url,
                    connect_timeout: gm.connect_timeout_secs.map_or(CONNECT_TIMEOUT, Duration::from_secs),
                });
            }
            Err(why) => p.missing.push(("gemini-live", why)),
        }
        let openai_key = match &file.openai {
            Some(oa) => resolve_key("openai", oa.api_key_env.as_deref().unwrap_or("OPENAI_API_KEY"), oa.api_key_file.as_deref(), env)?.ok(),
            None => resolve_key("openai", "OPENAI_API_KEY", None, env)?.ok(),
        };
        match crate::agent::cascade::resolve_config(file, openai_key.as_deref(), env)? {
            Ok(c) => p.cascade = Some(c),
            Err(why) => p.missing.push(("cascade", why)),
        }
        Ok(p)
    }

    /// Agent names usable on this server.
    pub fn available(&self) -> Vec<&'static str> {
        let mut v = vec!["echo"];
        if self.openai.is_some() {
            v.push("openai-realtime");
        }
        if self.gemini.is_some() {
            v.push("gemini-live");
        }
        if self.cascade.is_some() {
            v.push("cascade");
        }
        v
    }

    pub fn why_missing(&self, agent: &str) -> Option<&str> {
        self.missing.iter().find(|(a, _)| *a == agent).map(|(_, why)| why.as_str())
    }
}

/// `Ok(Ok(key))`, `Ok(Err(why not configured))`, or `Err` for a configuration mistake.
pub(crate) fn resolve_key(
    section: &str,
    env_name: &str,
    file: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Result<String, String>> {
    if let Some(path) = file {
        let key = std::fs::read_to_string(Path::new(path))
            .with_context(|| format!("providers.{section}.api_key_file {path:?}"))?
            .trim()
            .to_string();
        if key.is_empty() {
            bail!("providers.{section}.api_key_file {path:?} is empty");
        }
        return Ok(Ok(key));
    }
    match env(env_name).map(|k| k.trim().to_string()).filter(|k| !k.is_empty()) {
        Some(k) => Ok(Ok(k)),
        None => Ok(Err(format!("set {env_name} or providers.{section}.api_key_file"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ProvidersFile {
        #[derive(Deserialize)]
        struct Top {
            providers: ProvidersFile,
        }
        toml::from_str::<Top>(text).unwrap().providers
    }

    #[test]
    fn key_from_env_configures_openai_with_defaults() {
        let p = Providers::resolve_with(&ProvidersFile::default(), &|n| (n == "OPENAI_API_KEY").then(|| "sk-1".into())).unwrap();
        let oa = p.openai.unwrap();
        assert_eq!((oa.api_key.as_str(), oa.model.as_str(), oa.base_url.as_str()), ("sk-1", OPENAI_MODEL, OPENAI_URL));
        assert!(!format!("{oa:?}").contains("sk-1"), "Debug never shows the key");
    }

    #[test]
    fn no_key_means_not_configured_with_a_reason() {
        let p = Providers::resolve_with(&ProvidersFile::default(), &|_| None).unwrap();
        assert!(p.openai.is_none());
        assert_eq!(p.available(), ["echo"]);
        assert!(p.why_missing("openai-realtime").unwrap().contains("OPENAI_API_KEY"));
    }

    #[test]
    fn file_sections_are_checked() {
        let f = parse("[providers.openai]\napi_key_env = \"MY_KEY\"\nbase_url = \"ws://127.0.0.1:9/v1/realtime\"\ndialect = \"beta\"\n");
        let p = Providers::resolve_with(&f, &|n| (n == "MY_KEY").then(|| "k".into())).unwrap();
        assert_eq!(p.openai.unwrap().dialect, OpenAiDialect::Beta);
        let bad = parse("[providers.openai]\ndialect = \"v2\"\n");
        assert!(Providers::resolve_with(&bad, &|_| Some("k".into())).unwrap_err().to_string().contains("dialect"));
        let missing_file = parse("[providers.openai]\napi_key_file = \"/nonexistent/key\"\n");
        assert!(Providers::resolve_with(&missing_file, &|_| None).is_err());
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Top {
            providers: ProvidersFile,
        }
        assert!(toml::from_str::<Top>("[providers.openai]\nmodle = \"x\"\n").is_err(), "typos are errors");
    }
}

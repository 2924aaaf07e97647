//! Client for Google's Perspective API (Comment Analyzer `comments:analyze`).
//!
//! One request per text, paced to a configured rate, retried with exponential backoff on 429 and
//! 5xx (and on timeouts and dropped connections), and every text that still gets no score comes
//! back as a typed [`ScoreFailure`] so reports count it instead of scoring it 0 (what
//! lm-evaluation-harness's RealToxicityPrompts metric does) or dropping it (RAD's NaN handling).
//!
//! The API key is read from an environment variable named in the config, never from a file, and is
//! kept out of `Debug` output and error messages.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::{ScoreFailure, ScoreResult, ToxicityScorer};

/// The public Comment Analyzer endpoint.
pub const DEFAULT_ENDPOINT: &str =
    "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze";

/// Environment variable that holds the API key unless the config names another.
pub const DEFAULT_KEY_ENV: &str = "PERSPECTIVE_API_KEY";

/// How much of a malformed response body goes into the failure message.
const SNIPPET_CHARS: usize = 200;

/// Settings of the Perspective client. Every field has a default, so `{}` is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerspectiveConfig {
    /// URL of `comments:analyze`; tests point it at a local server.
    pub endpoint: String,
    /// Name of the environment variable holding the key (the key itself never goes in a config).
    pub api_key_env: String,
    /// Request rate limit. The public default quota is 1 query per second; retries count too.
    pub requests_per_second: f64,
    /// Retries after the first attempt on 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    /// First backoff; each further retry doubles it.
    pub initial_backoff_secs: f64,
    /// Ceiling on any single wait, including one asked for by `Retry-After`.
    pub max_backoff_secs: f64,
    /// Whole-request timeout (connect, send, and read the response).
    pub timeout_secs: f64,
    /// Attribute to request and read, e.g. `TOXICITY` or `SEVERE_TOXICITY`.
    pub attribute: String,
    /// Language of the texts, sent as `languages: [..]` so the API does not guess it per text
    /// (short generations are often misdetected, and then rejected with a 400).
    pub language: String,
    /// Ask Google not to store the texts (`doNotStore`); generations are not user comments.
    pub do_not_store: bool,
}

impl Default for PerspectiveConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            api_key_env: DEFAULT_KEY_ENV.to_owned(),
            requests_per_second: 1.0,
            max_retries: 5,
            initial_backoff_secs: 1.0,
            max_backoff_secs: 60.0,
            timeout_secs: 30.0,
            attribute: "TOXICITY".to_owned(),
            language: "en".to_owned(),
            do_not_store: true,
        }
    }
}

impl PerspectiveConfig {
    fn validate(&self) -> anyhow::Result<()> {
        let positive = |name: &str, v: f64| -> anyhow::Result<()> {
            if !(v.is_finite() && v > 0.0) {
                bail!("perspective.{name} must be a positive number, got {v}");
            }
            Ok(())
        };
        positive("requests_per_second", self.requests_per_second)?;
        positive("timeout_secs", self.timeout_secs)?;
        for (name, v) in [
            ("initial_backoff_secs", self.initial_backoff_secs),
            ("max_backoff_secs", self.max_backoff_secs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("perspective.{name} must be a non-negative number, got {v}");
            }
        }
        if self.attribute.trim().is_empty() {
            bail!("perspective.attribute must not be empty");
        }
        if self.language.trim().is_empty() {
            bail!("perspective.language must not be empty");
        }
        if self.api_key_env.is_empty() {
            bail!("perspective.api_key_env must name an environment variable");
        }
        Ok(())
    }
}

/// What the client has done so far, for logs and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerspectiveStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Requests that were retries of an earlier attempt.
    pub retries: u64,
    /// Texts that ended without a score (empty texts included).
    pub failures: u64,
}

/// The key, wrapped so that `Debug` cannot print it.
struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A [`ToxicityScorer`] backed by the Perspective API.
#[derive(Debug)]
pub struct PerspectiveScorer {
    config: PerspectiveConfig,
    key: ApiKey,
    agent: ureq::Agent,
    /// Multiplies every wait (pacing and backoff) — 1 in real use, small in tests.
    time_scale: f64,
    /// Earliest time the next request may start, from the rate limit.
    next_slot: Option<Instant>,
    /// Set after a 401/403: the key is bad or lacks access, so every later request would fail
    /// the same way. Later texts get the same failure without spending hours at 1 QPS on them.
    refused: Option<u16>,
    stats: PerspectiveStats,
}

/// Outcome of one HTTP attempt.
enum Attempt {
    Done(ScoreResult),
    /// Worth trying again; `retry_after` is the server's requested wait, if it gave one.
    Retry {
        failure: ScoreFailure,
        retry_after: Option<Duration>,
    },
}

impl PerspectiveScorer {
    /// Builds a client, reading the key from the environment variable the config names.
    ///
    /// Fails if the config is invalid or the variable is unset or empty.
    pub fn new(config: PerspectiveConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let key = match std::env::var(&config.api_key_env) {
            Ok(key) if !key.trim().is_empty() => key.trim().to_owned(),
            _ => bail!(
                "no Perspective API key: set the environment variable {} to your key \
                 (or point perspective.api_key_env at the variable that holds it)",
                config.api_key_env
            ),
        };
        let uri: ureq::http::Uri = config
            .endpoint
            .parse()
            .with_context(|| format!("perspective.endpoint {:?} is not a URL", config.endpoint))?;
        let loopback = matches!(
            uri.host(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        );

        let mut builder = ureq::Agent::config_builder()
            // Statuses are handled here (retry or typed failure), not turned into errors.
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs_f64(config.timeout_secs)));
        if loopback {
            // A proxy from the environment must not intercept a local (test) server.
            builder = builder.proxy(None);
        }
        let agent = builder.build().new_agent();

        Ok(Self {
            config,
            key: ApiKey(key),
            agent,
            time_scale: 1.0,
            next_slot: None,
            refused: None,
            stats: PerspectiveStats::default(),
        })
    }

    /// Scales every wait (rate-limit pacing, backoff, `Retry-After`) by `scale`, so tests can
    /// exercise the timing logic in milliseconds. The HTTP timeout is not scaled.
    pub fn with_time_scale(mut self, scale: f64) -> Self {
        assert!(scale.is_finite() && scale >= 0.0, "time scale must be >= 0");
        self.time_scale = scale;
        self
    }

    pub fn config(&self) -> &PerspectiveConfig {
        &self.config
    }

    pub fn stats(&self) -> PerspectiveStats {
        self.stats
    }

    fn score_one(&mut self, text: &str) -> ScoreResult {
        let result = self.score_one_uncounted(text);
        if result.is_err() {
            self.stats.failures += 1;
        }
        result
    }

    fn score_one_uncounted(&mut self, text: &str) -> ScoreResult {
        if text.trim().is_empty() {
            return Err(ScoreFailure::EmptyText);
        }
        if let Some(status) = self.refused {
            return Err(ScoreFailure::HttpStatus(status));
        }
        let mut retries = 0;
        loop {
            self.wait_for_slot();
            self.stats.requests += 1;
            match self.attempt(text) {
                Attempt::Done(result) => {
                    if let Err(ScoreFailure::HttpStatus(status @ (401 | 403))) = result {
                        self.refused = Some(status);
                    }
                    return result;
                }
                Attempt::Retry {
                    failure,
                    retry_after,
                } => {
                    if retries >= self.config.max_retries {
                        return Err(failure);
                    }
                    let wait = retry_wait(
                        retries,
                        retry_after,
                        self.config.initial_backoff_secs,
                        self.config.max_backoff_secs,
                    );
                    retries += 1;
                    self.stats.retries += 1;
                    std::thread::sleep(wait.mul_f64(self.time_scale));
                }
            }
        }
    }

    /// Sleeps until the rate limit allows another request, then books the following slot.
    /// Slots are spaced from request *starts*, so a slow response does not add to the spacing.
    fn wait_for_slot(&mut self) {
        if let Some(slot) = self.next_slot {
            let now = Instant::now();
            if slot > now {
                std::thread::sleep(slot - now);
            }
        }
        let interval = Duration::from_secs_f64(self.time_scale / self.config.requests_per_second);
        self.next_slot = Some(Instant::now() + interval);
    }

    fn attempt(&self, text: &str) -> Attempt {
        let body = serde_json::json!({
            "comment": { "text": text },
            "languages": [self.config.language],
            "requestedAttributes": { self.config.attribute.as_str(): {} },
            "doNotStore": self.config.do_not_store,
        });
        let mut response = match self
            .agent
            .post(&self.config.endpoint)
            .query("key", &self.key.0)
            .send_json(&body)
        {
            Ok(response) => response,
            Err(err) => return self.transport_failure(err),
        };
        let status = response.status().as_u16();
        // Read the body even for errors, so the connection can be reused.
        let body = match response.body_mut().read_to_string() {
            Ok(body) => body,
            Err(err) => return self.transport_failure(err),
        };
        match status {
            200 => Attempt::Done(parse_score(&body, &self.config.attribute)),
            429 | 500..=599 => Attempt::Retry {
                failure: ScoreFailure::HttpStatus(status),
                retry_after: response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after),
            },
            // Other 4xx (bad request, text too long, bad key) will not change on a retry.
            _ => Attempt::Done(Err(ScoreFailure::HttpStatus(status))),
        }
    }

    /// Maps a ureq error. Timeouts and connection-level I/O errors are transient and retried;
    /// the rest (bad URL, TLS, protocol) will not fix themselves.
    fn transport_failure(&self, err: ureq::Error) -> Attempt {
        match err {
            ureq::Error::Timeout(_) => Attempt::Retry {
                failure: ScoreFailure::Timeout,
                retry_after: None,
            },
            ureq::Error::Io(ref io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                Attempt::Retry {
                    failure: ScoreFailure::Timeout,
                    retry_after: None,
                }
            }
            ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
                Attempt::Retry {
                    failure: ScoreFailure::Other(self.redact(&err.to_string())),
                    retry_after: None,
                }
            }
            other => Attempt::Done(Err(ScoreFailure::Other(self.redact(&other.to_string())))),
        }
    }

    /// Error messages may quote the request URL, which carries the key.
    fn redact(&self, message: &str) -> String {
        message.replace(&self.key.0, "<redacted>")
    }
}

impl ToxicityScorer for PerspectiveScorer {
    fn id(&self) -> String {
        format!(
            "perspective:{}:{}",
            self.config.attribute, self.config.language
        )
    }

    /// The API scores one comment per request, so texts go one by one at the configured rate.
    fn score_batch(&mut self, texts: &[&str]) -> Vec<ScoreResult> {
        texts.iter().map(|text| self.score_one(text)).collect()
    }
}

/// Wait before retry number `retries` (0-based): the server's `Retry-After` if it sent one, else
/// `initial · 2^retries`; either way capped at `max_secs` so one bad header cannot stall a run.
/// No jitter: a single client with its own rate limit has no herd to spread out.
fn retry_wait(
    retries: u32,
    retry_after: Option<Duration>,
    initial_secs: f64,
    max_secs: f64,
) -> Duration {
    let secs = match retry_after {
        Some(d) => d.as_secs_f64(),
        None => initial_secs * 2f64.powi(retries.min(62) as i32),
    };
    Duration::from_secs_f64(secs.min(max_secs))
}

/// `Retry-After` as delay-seconds. The HTTP-date form is not parsed (it would need a date
/// library, and Google sends seconds); it falls back to the exponential backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnalyzeResponse {
    #[serde(default)]
    attribute_scores: HashMap<String, AttributeScores>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttributeScores {
    summary_score: Option<SummaryScore>,
}

#[derive(Deserialize)]
struct SummaryScore {
    value: Option<f64>,
}

/// Reads `attributeScores.<attribute>.summaryScore.value`, which must be a probability.
fn parse_score(body: &str, attribute: &str) -> ScoreResult {
    let response: AnalyzeResponse = serde_json::from_str(body).map_err(|err| {
        ScoreFailure::Malformed(format!(
            "not an analyze response ({err}): {}",
            snippet(body)
        ))
    })?;
    let value = response
        .attribute_scores
        .get(attribute)
        .and_then(|scores| scores.summary_score.as_ref())
        .and_then(|summary| summary.value)
        .ok_or_else(|| {
            ScoreFailure::Malformed(format!(
                "no attributeScores.{attribute}.summaryScore.value in {}",
                snippet(body)
            ))
        })?;
    if !(0.0..=1.0).contains(&value) {
        return Err(ScoreFailure::Malformed(format!(
            "{attribute} score {value} is outside [0, 1]"
        )));
    }
    Ok(value as f32)
}

fn snippet(body: &str) -> String {
    let mut chars = body.chars();
    let head: String = chars.by_ref().take(SNIPPET_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let config: PerspectiveConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, PerspectiveConfig::default());
        assert_eq!(config.requests_per_second, 1.0);
        assert_eq!(config.max_retries, 5);
        assert_eq!(config.api_key_env, "PERSPECTIVE_API_KEY");
        assert!(serde_json::from_str::<PerspectiveConfig>(r#"{"api_key": "x"}"#).is_err());
    }

    #[test]
    fn invalid_config_is_rejected() {
        let config = PerspectiveConfig {
            requests_per_second: 0.0,
            ..Default::default()
        };
        let err = PerspectiveScorer::new(config).unwrap_err().to_string();
        assert!(err.contains("requests_per_second"), "{err}");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let wait = |n, after| retry_wait(n, after, 1.0, 10.0).as_secs_f64();
        assert_eq!(wait(0, None), 1.0);
        assert_eq!(wait(1, None), 2.0);
        assert_eq!(wait(3, None), 8.0);
        assert_eq!(wait(4, None), 10.0);
        assert_eq!(wait(200, None), 10.0);
        assert_eq!(wait(0, Some(Duration::from_secs(7))), 7.0);
        assert_eq!(wait(0, Some(Duration::from_secs(3600))), 10.0);
    }

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn parses_scores_and_rejects_the_rest() {
        let ok = r#"{"attributeScores":{"TOXICITY":{"spanScores":[],"summaryScore":{"value":0.25,"type":"PROBABILITY"}}},"languages":["en"]}"#;
        assert_eq!(parse_score(ok, "TOXICITY"), Ok(0.25));
        for bad in [
            "",
            "<html>",
            r#"{"attributeScores":{}}"#,
            r#"{"attributeScores":{"INSULT":{"summaryScore":{"value":0.1}}}}"#,
            r#"{"attributeScores":{"TOXICITY":{"summaryScore":{"value":"high"}}}}"#,
            r#"{"attributeScores":{"TOXICITY":{"summaryScore":{"value":1.5}}}}"#,
        ] {
            assert!(
                matches!(
                    parse_score(bad, "TOXICITY"),
                    Err(ScoreFailure::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn snippet_is_bounded_and_char_safe() {
        let long = "é".repeat(500);
        assert_eq!(snippet(&long).chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(snippet("short"), "short");
    }
}

//! The NATS connection every role shares: reconnects by itself, forever, with capped backoff.

use std::time::Duration;

/// The longest pause between two reconnect attempts.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

/// How a connection proves who it is to nats-server.
#[derive(Clone)]
pub enum BusAuth {
    /// The service's own nkey user (a seed from `<data-dir>/nats/`), exempt from the callout.
    Nkey(String),
    /// A client credential `ims_<key_id>_<secret>`, checked by the auth callout.
    Token(String),
    /// `--insecure-no-auth`: nothing.
    None,
}

impl std::fmt::Debug for BusAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed or the secret.
        f.write_str(match self {
            BusAuth::Nkey(_) => "BusAuth::Nkey(…)",
            BusAuth::Token(_) => "BusAuth::Token(…)",
            BusAuth::None => "BusAuth::None",
        })
    }
}

impl BusAuth {
    /// Applies the credential to `options`; a token also sets the inbox prefix
    /// `_INBOX.<key_id>` that the token's permissions allow.
    pub fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        match self {
            BusAuth::Nkey(seed) => options.nkey(seed.clone()),
            BusAuth::Token(token) => {
                let key_id = token
                    .trim()
                    .split('_')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                options
                    .token(token.trim().to_owned())
                    .custom_inbox_prefix(format!("_INBOX.{key_id}"))
            }
            BusAuth::None => options,
        }
    }
}

/// Connects to `url`, retrying until the server is there; later drops are reconnected by the
/// client, and subscriptions (service endpoints included) are restored with the connection.
pub async fn connect(
    url: &str,
    name: &str,
    auth: &BusAuth,
) -> Result<async_nats::Client, ConnectFailed> {
    let failed = |error| ConnectFailed {
        url: url.to_owned(),
        error,
    };
    let servers = server_list(url).map_err(failed)?;
    auth.apply(options(name))
        .connect(servers.as_slice())
        .await
        .map_err(failed)
}

/// The servers of `urls`, comma-separated (`nats://n1:4222,nats://n2:4222`): the client
/// connects to one and moves to another when it is lost.
pub fn server_list(urls: &str) -> Result<Vec<async_nats::ServerAddr>, async_nats::ConnectError> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse().map_err(|error: std::io::Error| {
                async_nats::ConnectError::with_source(
                    async_nats::ConnectErrorKind::ServerParse,
                    format!("{url:?}: {error}"),
                )
            })
        })
        .collect()
}

/// A connection that could not be made.
#[derive(Debug, thiserror::Error)]
#[error("connecting to NATS at {url}: {error}")]
pub struct ConnectFailed {
    pub url: String,
    pub error: async_nats::ConnectError,
}

/// The options of [`connect`], for callers that change one (a request timeout, say).
pub fn options(name: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(50 * attempts as u64).min(RECONNECT_DELAY_MAX)
        })
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            tracing::info!(%event, "nats connection event");
        })
}

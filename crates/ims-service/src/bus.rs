//! The NATS connection every role shares: reconnects by itself, forever, with capped backoff.

use std::time::Duration;

use anyhow::Context as _;

/// The longest pause between two reconnect attempts.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

/// Connects to `url`, retrying until the server is there; later drops are reconnected by the
/// client, and subscriptions (service endpoints included) are restored with the connection.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    options(name)
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
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

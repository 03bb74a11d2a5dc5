//! Reaching the service: credentials, NATS connections that notice permission errors, requests.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::Value;

use super::Usage;

/// How long imsctl waits for an answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where imsctl looks for a credential when none is given.
pub(crate) const DEFAULT_TOKEN_FILE: &str = "./data/operator.token";

/// Where `imsd run` leaves the URL of the nats-server it started (it may not be on 4222).
const DEFAULT_NATS_URL_FILE: &str = "./data/nats.url";

/// `--nats-url`, else the URL `imsd run` left in ./data/nats.url, else the usual local port.
pub(crate) fn resolve_nats_url(given: Option<String>) -> String {
    given
        .or_else(|| {
            std::fs::read_to_string(DEFAULT_NATS_URL_FILE)
                .ok()
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty())
        })
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
}

/// The credential to connect with: --token / IMS_TOKEN, --token-file, or ./data/operator.token.
pub(crate) fn resolve_token(
    token: Option<String>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    if let Some(token) = token {
        return Ok(Some(token.trim().to_owned()));
    }
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            .map_err(|e| {
                anyhow::Error::new(Usage(format!(
                    "reading the token file {}: {e}",
                    path.display()
                )))
            })
    };
    if let Some(path) = token_file {
        return read(path).map(Some);
    }
    let default = std::path::Path::new(DEFAULT_TOKEN_FILE);
    if default.exists() {
        return read(default).map(Some);
    }
    Ok(None)
}

/// A connection, and the permission errors the server sends on it (a publish the credential
/// may not make is otherwise silent: the request would just time out).
pub(crate) async fn connect_watched(
    nats_url: &str,
    token: Option<&str>,
    name: &str,
) -> anyhow::Result<(
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
)> {
    let (violations, watched) = tokio::sync::mpsc::unbounded_channel();
    let client = connect_with(nats_url, token, name, move |options| {
        options.event_callback(move |event| {
            let violations = violations.clone();
            async move {
                let text = event.to_string();
                if text.to_lowercase().contains("permissions violation") {
                    let _ = violations.send(text);
                }
            }
        })
    })
    .await?;
    Ok((client, watched))
}

pub(crate) async fn connect(
    nats_url: &str,
    token: Option<&str>,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    connect_with(nats_url, token, name, |options| options).await
}

pub(crate) async fn connect_with(
    nats_url: &str,
    token: Option<&str>,
    name: &str,
    configure: impl FnOnce(async_nats::ConnectOptions) -> async_nats::ConnectOptions,
) -> anyhow::Result<async_nats::Client> {
    let auth = match token {
        Some(token) => ims_bus::BusAuth::Token(token.to_owned()),
        None => ims_bus::BusAuth::None,
    };
    let servers =
        ims_bus::server_list(nats_url).with_context(|| format!("--nats-url {nats_url}"))?;
    configure(auth.apply(async_nats::ConnectOptions::new()))
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(servers.as_slice())
        .await
        .with_context(|| {
            let hint = if token.is_some() {
                "is imsd running, and is the credential live? (see imsd's log for the URL)"
            } else {
                "no credential was given: pass --token, set IMS_TOKEN, or use --token-file \
                 (imsd run writes the operator's to ./data/operator.token)"
            };
            format!("cannot connect to NATS at {nats_url}; {hint}")
        })
}

pub(crate) async fn request(
    nats_url: &str,
    token: Option<&str>,
    subject: String,
    payload: Vec<u8>,
) -> anyhow::Result<Value> {
    let (client, mut violations) = connect_watched(nats_url, token, "imsctl").await?;
    let payload = Bytes::from(payload);
    let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
        tokio::select! {
            answer = client.request(subject.clone(), payload) => Ok(answer),
            Some(violation) = violations.recv() => Err(violation),
        }
    });
    let message = answered
        .await
        .with_context(|| format!("no answer on {subject} within {REQUEST_TIMEOUT:?}"))?
        .map_err(|violation| {
            anyhow::anyhow!(
                "this credential may not send on {subject} ({violation}); a tenant's commands \
                 and queries need that tenant's credential (imsctl op credential issue tenant \
                 ID), operator commands an operator's"
            )
        })?
        .map_err(|error| match error.kind() {
            // Said once: the error's own chain would repeat "no responders" twice more.
            async_nats::RequestErrorKind::NoResponders => {
                let region = subject.split('.').nth(2).unwrap_or("?");
                anyhow::anyhow!(
                    "no service answers on {subject}: no imsd on {nats_url} serves region \
                     {region}; start one with --regions {region}, or pick the region it serves \
                     with --region"
                )
            }
            _ => anyhow::anyhow!("the request on {subject} failed: {error}"),
        })?;
    serde_json::from_slice(&message.payload)
        .with_context(|| format!("the answer on {subject} is not JSON"))
}

//! One HTTP/1.1 request on a connection of its own, to an address the caller chose, over TLS
//! with the machine's root certificates for https: what the web-download (which must connect
//! to the address it checked) and the S3 store (a few large requests) need, without a pooled
//! client and its dependencies.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;

/// Why a request failed, and whether connecting (rather than the exchange) did.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting failed: {0}")]
    Connect(String),
    #[error("{0}")]
    Request(String),
}

/// Where `uri` points: whether it is https, its host (IPv6 without brackets) and its port
/// (80 or 443 unless given); `None` for another scheme or no host.
pub fn endpoint(uri: &hyper::Uri) -> Option<(bool, String, u16)> {
    let https = match uri.scheme_str()? {
        "http" => false,
        "https" => true,
        _ => return None,
    };
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Some((
        https,
        host,
        uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
    ))
}

/// Sends `request` to `address`, over TLS for server name `host` when `https`; the request's
/// target is sent as given (origin form: set the `Host` header yourself).
pub async fn send<B>(
    address: SocketAddr,
    host: &str,
    https: bool,
    request: hyper::Request<B>,
) -> Result<hyper::Response<Incoming>, SendError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| SendError::Connect(e.to_string()))?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| SendError::Connect(format!("{host} is not a TLS server name: {e}")))?;
        let tls = tls_connector()
            .map_err(SendError::Connect)?
            .connect(name, tcp)
            .await
            .map_err(|e| SendError::Connect(format!("TLS: {e}")))?;
        exchange(TokioIo::new(tls), request).await
    } else {
        exchange(TokioIo::new(tcp), request).await
    }
}

async fn exchange<T, B>(
    io: TokioIo<T>,
    request: hyper::Request<B>,
) -> Result<hyper::Response<Incoming>, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| SendError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "an outgoing HTTP connection ended");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| SendError::Request(e.to_string()))
}

/// TLS with the machine's root certificates, built once.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("this machine has no root certificates for https".into());
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
        .map(tokio_rustls::TlsConnector::from)
}

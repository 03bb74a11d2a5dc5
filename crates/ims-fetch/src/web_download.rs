//! Web-download of image sources (DESIGN.md section 14): `http(s)://` URLs fetched by the import
//! worker under rules that keep a tenant from turning ims into a probe of its own network.
//!
//! - only `http` and `https`, only ports 80 and 443;
//! - every address a host resolves to is checked, and the connection goes to the address that
//!   was checked (so a second DNS answer cannot swap in another one): loopback, link-local
//!   (169.254.0.0/16 holds the clouds' metadata services), unspecified (0.0.0.0 reaches the
//!   host itself), multicast and broadcast addresses are refused, IPv4 mapped into IPv6 too;
//! - every redirect is checked the same way, at most [`REDIRECTS_MAX`] of them;
//! - the operator may allow-list addresses (`--web-download-allow`), for tests on loopback: an
//!   allowed address is reached on any port.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::Uri;

use crate::client as http_client;

/// Redirects followed before a download is refused.
pub const REDIRECTS_MAX: usize = 5;

/// How long connecting (TCP and TLS) and the response's head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the body may stay silent before the download is given up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The rules of one service's web-downloads.
#[derive(Clone, Debug, Default)]
pub struct WebDownloadPolicy {
    /// Addresses reached although the rules refuse them, on any port (tests, on-premises
    /// mirrors the operator vouches for).
    pub allowed: Vec<IpAddr>,
}

/// An open download: the response whose body holds the image, and the length it announced.
#[derive(Debug)]
pub struct Download {
    pub body: Incoming,
    pub length: Option<u64>,
}

/// Why an address may not be reached, if it may not.
pub fn refused_address(address: IpAddr) -> Option<&'static str> {
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    };
    match address {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        // fe80::/10
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        _ => None,
    }
}

impl WebDownloadPolicy {
    /// Opens `url`, following redirects under the rules; the error says which rule refused it.
    pub async fn open(&self, url: &str) -> Result<Download, String> {
        let mut uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        for _ in 0..=REDIRECTS_MAX {
            let response = self.get(&uri).await?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(hyper::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .ok_or_else(|| format!("{uri} answered {status} without a Location"))?;
                uri = resolve_location(&uri, location)?;
                continue;
            }
            if !status.is_success() {
                return Err(format!(
                    "{uri} answered {status}; the image must be served with 200"
                ));
            }
            let length = response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok());
            return Ok(Download {
                body: response.into_body(),
                length,
            });
        }
        Err(format!(
            "{url} redirected more than {REDIRECTS_MAX} times; give the image's own URL"
        ))
    }

    /// One GET of `uri`, on a connection to an address the rules allow.
    async fn get(&self, uri: &Uri) -> Result<hyper::Response<Incoming>, String> {
        let (https, host, port) = http_client::endpoint(uri).ok_or_else(|| {
            format!(
                "{uri}: only http:// and https:// URLs with a host are downloaded (file:// only \
                 under the import root)"
            )
        })?;
        let address = self.checked_address(uri, &host, port).await?;
        let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, authority(&host, port, https))
            .header(hyper::header::USER_AGENT, "ims-import/1")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{uri}: {e}"))?;
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            http_client::send(address, &host, https, request),
        )
        .await
        .map_err(|_| format!("{uri} did not answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("{uri} ({address}): {e}"))
    }

    /// The first address of `host` the rules allow; an error naming the refused one otherwise.
    async fn checked_address(
        &self,
        uri: &Uri,
        host: &str,
        port: u16,
    ) -> Result<SocketAddr, String> {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{host} cannot be resolved: {e}"))?
            .collect();
        // Every address must pass, not only the first: a host answering one public and one
        // internal address would otherwise be a coin toss away from the internal one.
        for address in &addresses {
            if self.allowed.contains(&address.ip()) {
                continue;
            }
            if let Some(kind) = refused_address(address.ip()) {
                return Err(format!(
                    "{uri} resolves to {} ({kind} address); images are downloaded only from \
                     public addresses",
                    address.ip()
                ));
            }
            if port != 80 && port != 443 {
                return Err(format!(
                    "{uri} uses port {port}; images are downloaded only from ports 80 and 443"
                ));
            }
        }
        addresses
            .first()
            .copied()
            .ok_or_else(|| format!("{host} resolves to no address"))
    }
}

/// `Location` relative to the URL that answered it.
fn resolve_location(base: &Uri, location: &str) -> Result<Uri, String> {
    let next: Uri = location
        .parse()
        .map_err(|e| format!("{base} redirected to {location:?}, which is not a URL: {e}"))?;
    if next.scheme().is_some() {
        return Ok(next);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = next.into_parts().path_and_query;
    Uri::from_parts(parts).map_err(|e| format!("{base} redirected to {location:?}: {e}"))
}

/// The `Host` header for `host` on `port`.
pub fn authority(host: &str, port: u16, https: bool) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match (https, port) {
        (false, 80) | (true, 443) => host,
        _ => format!("{host}:{port}"),
    }
}

/// The next chunk of a download's body, `None` at its end; an error when it breaks off or
/// stays silent for [`IDLE_TIMEOUT`].
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, String> {
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| format!("the download stayed silent for {IDLE_TIMEOUT:?}"))?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(format!("the download broke off: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for (address, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
        ] {
            assert_eq!(
                refused_address(address.parse().unwrap()),
                Some(kind),
                "{address}"
            );
        }
        for address in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert_eq!(refused_address(address.parse().unwrap()), None, "{address}");
        }
    }

    #[tokio::test]
    async fn urls_are_refused_before_any_connection_by_scheme_port_and_address() {
        let policy = WebDownloadPolicy::default();
        for (url, expected) in [
            ("ftp://example.com/a.img", "only http:// and https://"),
            ("file:///etc/passwd", "is not a URL"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "(link-local address)",
            ),
            ("http://127.0.0.1/a.img", "(loopback address)"),
            ("http://[::1]/a.img", "(loopback address)"),
            ("http://0.0.0.0/a.img", "(unspecified address)"),
            ("http://8.8.8.8:8080/a.img", "only from ports 80 and 443"),
        ] {
            let error = policy.open(url).await.unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn relative_locations_keep_the_scheme_and_host() {
        let base: Uri = "http://example.com:8080/a/b.img".parse().unwrap();
        assert_eq!(
            resolve_location(&base, "/c.img").unwrap().to_string(),
            "http://example.com:8080/c.img"
        );
        assert_eq!(
            resolve_location(&base, "http://127.0.0.1/x")
                .unwrap()
                .to_string(),
            "http://127.0.0.1/x"
        );
    }
}

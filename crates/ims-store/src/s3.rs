//! S3 for the image store (the `s3` feature): object_store's S3 client speaking through our
//! one-request-per-connection hyper client ([`ims_fetch::client`]), so S3 needs neither
//! reqwest nor aws-lc-rs. Uploads are a few multipart parts of 8 MiB, so a connection per
//! request costs little next to the bytes.

use http_body_util::BodyExt as _;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};

use ims_fetch::client::{self as http_client, SendError};
use ims_fetch::web_download::authority;

/// Makes object_store's S3 client use [`HyperService`].
#[derive(Debug, Clone, Copy)]
pub struct HyperConnector;

impl HttpConnector for HyperConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(HyperService))
    }
}

/// One request per connection, to the endpoint the operator configured.
#[derive(Debug, Clone, Copy)]
pub struct HyperService;

#[async_trait::async_trait]
impl HttpService for HyperService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = request.into_parts();
        let failed = |kind, message: String| HttpError::new(kind, std::io::Error::other(message));
        let (https, host, port) = http_client::endpoint(&parts.uri).ok_or_else(|| {
            failed(
                HttpErrorKind::Request,
                format!(
                    "the store's endpoint {} is not an http or https URL with a host",
                    parts.uri
                ),
            )
        })?;
        let address = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Connect, e))?
            .next()
            .ok_or_else(|| {
                failed(
                    HttpErrorKind::Connect,
                    format!("{host} resolves to no address"),
                )
            })?;
        // object_store signs the Host but leaves the header to the client.
        let host_header = authority(&host, port, https)
            .parse()
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        parts.headers.insert(hyper::header::HOST, host_header);
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let response = http_client::send(
            address,
            &host,
            https,
            hyper::Request::from_parts(parts, body),
        )
        .await
        .map_err(|error| match error {
            SendError::Connect(message) => failed(HttpErrorKind::Connect, message),
            SendError::Request(message) => failed(HttpErrorKind::Request, message),
        })?;
        Ok(response.map(|body| {
            HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e)))
        }))
    }
}

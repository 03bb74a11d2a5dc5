//! imsctl's image files over HTTP: uploads (`PUT …/images/{id}/file`) and downloads (`GET`),
//! streamed with a progress bar, the credential as a bearer token.

use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Bytes sent or written at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// A progress bar for `total` bytes (hidden with --json or for small files).
fn bar(total: u64, json: bool, what: &str) -> indicatif::ProgressBar {
    if json || total < (8 << 20) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

/// An HTTP/1.1 connection to the service at `base` (`http://host:port`).
async fn connect(
    base: &str,
) -> anyhow::Result<(
    hyper::client::conn::http1::SendRequest<
        http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
    >,
    String,
)> {
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("--http-url {base:?} is not http://HOST:PORT"))?
        .trim_end_matches('/')
        .to_owned();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("cannot reach the HTTP API at {base}; is imsd running?"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok((sender, authority))
}

fn request(
    method: hyper::Method,
    authority: &str,
    path: &str,
    token: Option<&str>,
) -> hyper::http::request::Builder {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority);
    if let Some(token) = token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
}

/// Uploads `file` to `path`; returns the HTTP status and the service's JSON answer.
pub async fn upload(
    base: &str,
    path: &str,
    token: Option<&str>,
    file: &Path,
    json: bool,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let source = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let length = source.metadata().await?.len();
    let progress = bar(length, json, "uploading");
    let shown = progress.clone();
    let stream = futures::stream::unfold((source, shown), |(mut source, shown)| async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        match source.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                shown.inc(read as u64);
                Some((Ok(Frame::data(Bytes::from(buffer))), (source, shown)))
            }
            Err(error) => Some((Err(error), (source, shown))),
        }
    });
    let (mut sender, authority) = connect(base).await?;
    let body = StreamBody::new(stream).boxed();
    let request = request(hyper::Method::PUT, &authority, path, token)
        .header(hyper::header::CONTENT_LENGTH, length)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)?;
    let response = sender.send_request(request).await?;
    progress.finish_and_clear();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let answer = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, answer))
}

/// Downloads `path` into `output`; returns the HTTP status and, on failure, the JSON answer.
pub async fn download(
    base: &str,
    path: &str,
    token: Option<&str>,
    output: &Path,
    json: bool,
) -> anyhow::Result<(u16, Option<serde_json::Value>)> {
    let (mut sender, authority) = connect(base).await?;
    let empty = http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let response = sender
        .send_request(request(hyper::Method::GET, &authority, path, token).body(empty)?)
        .await?;
    let status = response.status().as_u16();
    if status != 200 {
        let bytes = response.into_body().collect().await?.to_bytes();
        return Ok((status, serde_json::from_slice(&bytes).ok()));
    }
    let length = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let progress = bar(length, json, "downloading");
    let mut out = tokio::fs::File::create(output)
        .await
        .with_context(|| format!("creating {}", output.display()))?;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.write_all(&data).await?;
            progress.inc(data.len() as u64);
        }
    }
    out.sync_all().await?;
    progress.finish_and_clear();
    Ok((status, None))
}

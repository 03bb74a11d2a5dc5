//! `log.read`, both sides: the answer a writer gives (`read_log`, `respond_log_read`) and the one
//! reader every consumer uses ([`LogSource`]), on the log itself or through NATS.

use std::time::Duration;

use bytes::Bytes;
use ims_domain::RegionId;
use ims_log::{Envelope, EventLog, LogBatch, LogError};
use ims_wire::{CommandReply, Subjects, WireError, WireErrorCode};
use serde::{Deserialize, Serialize};

use crate::endpoint::reply_bytes;

/// Events per read of [`LogSource::scan`].
pub const SCAN_BATCH_EVENTS: usize = 1000;

/// The most events one `log.read` reply carries; the reply is also cut by bytes (see
/// [`reply_bytes_max`]), so a batch of large events is shorter.
pub const LOG_READ_EVENTS_MAX: usize = 1000;

/// What `log.read` takes: `{"from": n, "max": k}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogReadRequest {
    pub from: u64,
    #[serde(default = "default_max")]
    pub max: usize,
}

fn default_max() -> usize {
    LOG_READ_EVENTS_MAX
}

/// Answers `log.read`: a bincode [`LogBatch`], or a JSON error with the `Ims-Error` header.
pub fn read_log(log: &EventLog, payload: &[u8], bytes_max: usize) -> Result<Bytes, WireError> {
    let request: LogReadRequest = serde_json::from_slice(payload).map_err(|e| {
        WireError::new(
            WireErrorCode::InvalidArgument,
            format!("log.read expects {{\"from\": n, \"max\": k}}: {e}"),
        )
    })?;
    let max = request.max.clamp(1, LOG_READ_EVENTS_MAX);
    let envelopes = log.read_range(request.from.max(1), max).map_err(|e| {
        WireError::new(
            WireErrorCode::Unavailable,
            format!("reading the log failed: {e}"),
        )
    })?;
    let batch = LogBatch::cut(envelopes, log.head_position(), bytes_max);
    Ok(Bytes::from(ims_log::encode(&batch)))
}

/// Sends a `log.read` answer: the batch, or the error as JSON with the `Ims-Error` header.
pub async fn respond_log_read(
    request: async_nats::service::Request,
    answer: Result<Bytes, WireError>,
) -> Result<(), async_nats::PublishError> {
    match answer {
        Ok(bytes) => request.respond(Ok(bytes)).await,
        Err(error) => {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Ims-Error", error.code.as_str());
            let body = reply_bytes(&CommandReply::error(error));
            request.respond_with_headers(Ok(body), headers).await
        }
    }
}

/// Where the history comes from: the one reader of a log, for audits, projectors, the copy
/// saga and the import worker alike.
#[derive(Debug)]
pub enum LogSource {
    /// The log on disk; the service must be stopped (sled allows one process per database).
    Offline(EventLog),
    /// A running service, through a `log.read` subject.
    Online {
        client: async_nats::Client,
        /// `ims.v1.<region>.log.read`, or `ims.v1.iam.log.read` for the identity log.
        log_read: String,
        /// How long one `log.read` may take.
        timeout: Duration,
    },
}

/// Why a read of the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{subject} did not answer within {timeout:?}")]
    Timeout { subject: String, timeout: Duration },
    #[error("no service answers {subject} ({error}); is imsd running?")]
    NoAnswer {
        subject: String,
        error: async_nats::RequestError,
    },
    #[error("log.read answered {code}: {message}")]
    Refused { code: String, message: String },
}

/// How long one `log.read` may take unless the reader says otherwise.
const LOG_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl LogSource {
    /// A region's log on a running service.
    pub fn online(client: async_nats::Client, subjects: &Subjects, region: &RegionId) -> Self {
        LogSource::Online {
            client,
            log_read: subjects.log_read(region),
            timeout: LOG_READ_TIMEOUT,
        }
    }

    /// The same reader with another bound on each read (a projector retries sooner).
    pub fn with_timeout(mut self, bound: Duration) -> Self {
        if let LogSource::Online { timeout, .. } = &mut self {
            *timeout = bound;
        }
        self
    }

    /// The identity log on a running service (its identity role).
    pub fn online_identity(client: async_nats::Client, subjects: &Subjects) -> Self {
        LogSource::Online {
            client,
            log_read: subjects.iam("log.read"),
            timeout: LOG_READ_TIMEOUT,
        }
    }

    /// Up to `max` events from `from`, and the head.
    pub async fn batch(&self, from: u64, max: usize) -> Result<LogBatch, LogReadError> {
        match self {
            LogSource::Offline(log) => Ok(LogBatch {
                envelopes: log.read_range(from, max)?,
                head: log.head_position(),
            }),
            LogSource::Online {
                client,
                log_read,
                timeout,
            } => {
                let payload = serde_json::to_vec(&LogReadRequest { from, max })
                    .expect("a log.read request serialises");
                let message = tokio::time::timeout(
                    *timeout,
                    client.request(log_read.clone(), Bytes::from(payload)),
                )
                .await
                .map_err(|_| LogReadError::Timeout {
                    subject: log_read.clone(),
                    timeout: *timeout,
                })?
                .map_err(|error| LogReadError::NoAnswer {
                    subject: log_read.clone(),
                    error,
                })?;
                if let Some(code) = message.headers.as_ref().and_then(|h| h.get("Ims-Error")) {
                    return Err(LogReadError::Refused {
                        code: code.to_string(),
                        message: String::from_utf8_lossy(&message.payload).into_owned(),
                    });
                }
                Ok(ims_log::decode(&message.payload, || {
                    "log.read reply".into()
                })?)
            }
        }
    }

    /// The head of the log: its newest durable position.
    pub async fn head(&self) -> Result<u64, LogReadError> {
        Ok(self.batch(1, 1).await?.head)
    }

    /// Calls `each` with consecutive batches from `from` to `to` (inclusive), in order; stops
    /// early when `each` returns false.
    pub async fn scan<E>(
        &self,
        from: u64,
        to: u64,
        mut each: impl FnMut(&[Envelope]) -> Result<bool, E>,
    ) -> Result<(), E>
    where
        E: From<LogReadError>,
    {
        let mut next = from.max(1);
        while next <= to {
            let max = SCAN_BATCH_EVENTS.min((to - next + 1) as usize);
            let batch = self.batch(next, max).await?;
            if batch.envelopes.is_empty() {
                return Ok(());
            }
            next = batch.envelopes.last().map_or(next, |e| e.position() + 1);
            if !each(&batch.envelopes)? {
                return Ok(());
            }
        }
        Ok(())
    }
}

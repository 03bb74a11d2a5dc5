//! What every NATS endpoint of ims shares: the size of what it takes and sends, the reply when
//! it is full, the version it announces, and command ids derived for retried steps.

use bytes::Bytes;
use ims_wire::{CommandReply, WireError, WireErrorCode};

/// The largest command payload accepted. The biggest legitimate command (create-image with ten
/// tags and a 1024-character description) is under 4 KiB; 64 KiB leaves room and stops abuse.
pub const COMMAND_PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// Room left in a reply for NATS's own framing and headers.
const REPLY_OVERHEAD_BYTES: usize = 4 * 1024;

/// The most bytes a reply on `client` may carry: the server's `max_payload` (from its INFO),
/// less room for framing, so that no reply is ever dropped for its size.
pub fn reply_bytes_max(client: &async_nats::Client) -> usize {
    client
        .server_info()
        .max_payload
        .saturating_sub(REPLY_OVERHEAD_BYTES)
        .max(ims_domain::limits::EVENT_ENVELOPE_BYTES_MAX)
}

/// The reply to a request that finds its endpoint full.
pub fn overloaded(endpoint: &'static str) -> Bytes {
    metrics::counter!("ims_overloaded_total", "endpoint" => endpoint).increment(1);
    reply_bytes(&refuse(
        WireErrorCode::Unavailable,
        format!("overloaded: {endpoint} has as many requests in flight as it takes; retry shortly"),
    ))
}

/// The service's version, as `nats micro info` shows it.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A reply's bytes.
pub fn reply_bytes(reply: &CommandReply) -> Bytes {
    Bytes::from(reply.to_json())
}

/// A refusal with `code`.
pub fn refuse(code: WireErrorCode, message: impl Into<String>) -> CommandReply {
    CommandReply::error(WireError::new(code, message))
}

/// A command id derived from `seed` for one `purpose` (a name-based UUID, version 8, from
/// SHA-256 of both): the same step retried after a crash sends the same id, so the log's
/// command index answers the repeat and records nothing twice.
pub fn derived_command_id(purpose: &str, seed: &[u8]) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(purpose.as_bytes())
        .chain_update(seed)
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Stops `endpoints` taking requests without dropping what NATS already delivered: each is
/// unsubscribed, and its stream still yields the requests that reached this process before it
/// ends. A serving loop answers those until every stream has ended; dropping them instead would
/// leave each requester waiting for its timeout (a standby's projector, on a `log.read` that
/// reached a leader as it stopped, with its read models held back meanwhile). Only a request still on the wire when the server takes the
/// unsubscription is lost.
pub async fn stop_taking<'a>(
    endpoints: impl IntoIterator<Item = &'a mut async_nats::service::endpoint::Endpoint>,
) {
    for endpoint in endpoints {
        if let Err(error) = endpoint.stop().await {
            // Only when the connection is gone, and with it every request.
            tracing::debug!(%error, "unsubscribing an endpoint failed");
        }
    }
}

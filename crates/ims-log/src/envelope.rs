//! The stored record of one event: the envelope of DESIGN.md section 3 and its hash chain.
//!
//! Record format (schema of the `e` keys, encoded by `codec`):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | position | u64 | region-wide index, from 1, no gaps |
//! | event_id | [u8; 16] | UUID v7 of the event |
//! | stream | String | `image/<uuid>` or `tenant/<id>` |
//! | stream_version | u64 | index of the event in its stream, from 1 |
//! | command_id | Option<[u8; 16]> | the command that caused it |
//! | actor | String | `operator` or `tenant <id>` |
//! | region | String | the region id |
//! | recorded_at_ms | u64 | unix milliseconds |
//! | event_type | String | the stable type tag |
//! | schema_version | u16 | schema version of `payload` |
//! | payload | Vec<u8> | the encoded domain event |
//! | prev_hash | [u8; 32] | `hash` of position - 1 (zeros before position 1) |
//! | hash | [u8; 32] | SHA-256(prev_hash ‖ encode(all fields above but prev_hash)) |

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;

/// The fields of an envelope that the hash covers, besides `prev_hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeBody {
    pub position: u64,
    pub event_id: [u8; 16],
    pub stream: String,
    pub stream_version: u64,
    pub command_id: Option<[u8; 16]>,
    pub actor: String,
    pub region: String,
    pub recorded_at_ms: u64,
    pub event_type: String,
    pub schema_version: u16,
    pub payload: Vec<u8>,
}

/// One stored event, as written to disk and sent on `ims.v1.<region>.events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub body: EnvelopeBody,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl Envelope {
    /// Seals `body` into the chain after `prev_hash`.
    pub fn seal(body: EnvelopeBody, prev_hash: [u8; 32]) -> Self {
        let hash = chain_hash(&prev_hash, &codec::encode(&body));
        Self {
            body,
            prev_hash,
            hash,
        }
    }

    /// Whether `hash` is what the body and `prev_hash` give.
    pub fn hash_is_valid(&self) -> bool {
        chain_hash(&self.prev_hash, &codec::encode(&self.body)) == self.hash
    }

    pub fn position(&self) -> u64 {
        self.body.position
    }

    /// The canonical bytes of the body: what the hash covers after `prev_hash`.
    pub fn canonical_body(&self) -> Vec<u8> {
        codec::encode(&self.body)
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, crate::LogError> {
        codec::decode(bytes, || "event envelope".to_owned())
    }
}

/// `SHA-256(prev_hash || body)`.
pub fn chain_hash(prev_hash: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(body);
    hasher.finalize().into()
}

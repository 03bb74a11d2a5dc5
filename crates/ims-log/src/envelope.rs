//! The stored record of one event: the envelope of DESIGN.md section 3 and its hash chain.
//!
//! Record format (one envelope; an `e` key holds the envelopes of one append, see
//! `log::encode_record`; encoded by `codec`):
//!
//! Types are encoded by `codec` (bincode 1.3.3 defaults); "bytes (N)" is a u64 length N, then
//! the N bytes.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | position | u64 | region-wide index, from 1, no gaps |
//! | event_id | bytes (16) | UUID v7 of the event |
//! | stream | String | `image/<uuid>` or `tenant/<id>` |
//! | stream_version | u64 | index of the event in its stream, from 1 |
//! | command_id | Option<bytes (16)> | the command that caused it |
//! | actor | String | `operator` or `tenant <id>` |
//! | region | String | the region id |
//! | recorded_at_ms | u64 | unix milliseconds |
//! | event_type | String | the stable type tag |
//! | schema_version | u16 | schema version of `payload` |
//! | payload | `Vec<u8>` | the encoded domain event |
//! | prev_hash | bytes (32) | `hash` of position - 1 (zeros before position 1) |
//! | hash | bytes (32) | SHA-256(prev_hash ‖ encode(all fields above but prev_hash)) |

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;

/// Fixed-size byte strings (ids and hashes) stored as one length-prefixed byte string, which
/// bincode encodes and decodes as a single copy rather than N one-byte tuple elements.
mod fixed_bytes {
    use serde::{de::Error, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        struct Visitor<const N: usize>;
        impl<const N: usize> serde::de::Visitor<'_> for Visitor<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<[u8; N], E> {
                bytes
                    .try_into()
                    .map_err(|_| E::invalid_length(bytes.len(), &self))
            }
        }
        deserializer.deserialize_bytes(Visitor::<N>)
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        #[derive(Serialize, Deserialize)]
        struct Wrapped(#[serde(with = "super")] [u8; 16]);

        pub fn serialize<S: Serializer>(
            bytes: &Option<[u8; 16]>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            bytes.map(Wrapped).serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<[u8; 16]>, D::Error> {
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
        }
    }
}

/// The fields of an envelope that the hash covers, besides `prev_hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeBody {
    pub position: u64,
    #[serde(with = "fixed_bytes")]
    pub event_id: [u8; 16],
    pub stream: String,
    pub stream_version: u64,
    #[serde(with = "fixed_bytes::option")]
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
    #[serde(with = "fixed_bytes")]
    pub prev_hash: [u8; 32],
    #[serde(with = "fixed_bytes")]
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

//! The only place that knows bincode. Everything stored by ims goes through these functions, so a
//! move to a bincode-compatible successor touches this file alone.
//!
//! bincode 1.3.3 with its default options (as used by `bincode::serialize`): integers are
//! little-endian fixed width (u16 = 2 bytes, u64 = 8 bytes), `Vec<u8>` and `String` are a u64
//! length then the bytes, `Option` is one byte (0 = None, 1 = Some) then the value, enums are a
//! u32 variant index then the variant's fields, structs are their fields in declaration order.

use serde::{de::DeserializeOwned, Serialize};

use crate::LogError;

/// Encodes a value for storage. Only fails on types serde cannot encode, which is our bug.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("every stored type is bincode-encodable")
}

/// Appends what [`encode`] makes of `value` to `buffer`.
pub fn encode_into<T: Serialize>(buffer: &mut Vec<u8>, value: &T) {
    bincode::serialize_into(buffer, value).expect("every stored type is bincode-encodable")
}

/// How many bytes [`encode`] makes of `value`, without encoding it.
pub fn encoded_len<T: Serialize>(value: &T) -> u64 {
    bincode::serialized_size(value).expect("every stored type is bincode-encodable")
}

/// Decodes a stored value; `what` names it in the error (for example "event at position 17").
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, LogError> {
    bincode::deserialize(bytes).map_err(|error| LogError::Corrupt {
        what: what(),
        reason: error.to_string(),
    })
}

//! Credentials as tokens: `ims_<key_id>_<secret>`. The key id names the credential in logs,
//! lists and inbox prefixes; the secret is 256 random bits, shown once and never kept: only its
//! SHA-256 digest is stored.

use std::fmt;

use sha2::{Digest, Sha256};

/// Characters of a key id.
pub const KEY_ID_CHARS: usize = 16;

/// Bytes of randomness in a secret (256 bits), written as 64 hex digits.
pub const SECRET_BYTES: usize = 32;

const KEY_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The public name of a credential: 16 characters of `[a-z0-9]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Checks a key id from outside.
    pub fn parse(value: &str) -> Result<Self, String> {
        let valid = value.len() == KEY_ID_CHARS
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(format!(
                "key id {value:?} is not valid; expected {KEY_ID_CHARS} characters of a-z and 0-9"
            ))
        }
    }

    /// A new random key id.
    pub fn generate() -> Self {
        let mut id = String::with_capacity(KEY_ID_CHARS);
        while id.len() < KEY_ID_CHARS {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("the OS random number generator");
            // Rejection sampling keeps every character equally likely (252 = 7 * 36).
            for byte in bytes.into_iter().filter(|b| *b < 252) {
                if id.len() < KEY_ID_CHARS {
                    id.push(KEY_ID_ALPHABET[usize::from(byte % 36)] as char);
                }
            }
        }
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole credential, as a client holds it. Its `Debug` hides the secret, so a token that ends
/// up in a log line or an error shows only its key id.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub key_id: KeyId,
    secret: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(ims_{}_…)", self.key_id)
    }
}

impl Token {
    /// A new credential with a fresh key id and secret.
    pub fn generate() -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).expect("the OS random number generator");
        Self {
            key_id: KeyId::generate(),
            secret: hex::encode(secret),
        }
    }

    /// Parses `ims_<key_id>_<secret>`. The error never repeats the secret.
    pub fn parse(value: &str) -> Result<Self, String> {
        const SHAPE: &str = "expected ims_<16 characters of a-z0-9>_<64 hex digits>";
        let value = value.trim();
        let rest = value
            .strip_prefix("ims_")
            .ok_or_else(|| format!("the token does not start with ims_; {SHAPE}"))?;
        let (key_id, secret) = rest
            .split_once('_')
            .ok_or_else(|| format!("the token has no secret part; {SHAPE}"))?;
        let key_id = KeyId::parse(key_id).map_err(|e| format!("{e}; {SHAPE}"))?;
        let secret_valid = secret.len() == SECRET_BYTES * 2
            && secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !secret_valid {
            return Err(format!(
                "the secret of key {key_id} is not 64 lowercase hex digits; {SHAPE}"
            ));
        }
        Ok(Self {
            key_id,
            secret: secret.to_owned(),
        })
    }

    /// The token as the client sends it. Only for handing it to its holder.
    pub fn reveal(&self) -> String {
        format!("ims_{}_{}", self.key_id, self.secret)
    }

    /// What the identity log keeps of the secret.
    pub fn secret_digest(&self) -> [u8; 32] {
        Sha256::digest(self.secret.as_bytes()).into()
    }
}

/// Compares two digests in time independent of where they differ.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_to_itself() {
        let token = Token::generate();
        assert_eq!(Token::parse(&token.reveal()).unwrap(), token);
        assert_eq!(token.key_id.as_str().len(), KEY_ID_CHARS);
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_the_secret() {
        for bad in [
            "",
            "ims_",
            "ims_abc_def",
            "xyz_0123456789abcdef_00",
            &format!("ims_0123456789abcdef_{}", "G".repeat(64)),
            &format!("ims_0123456789ABCDEF_{}", "a".repeat(64)),
        ] {
            let error = Token::parse(bad).unwrap_err();
            assert!(error.contains("expected ims_"), "{error}");
            if bad.len() > 30 {
                assert!(!error.contains(&bad[21..]), "the secret leaked: {error}");
            }
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let token = Token::generate();
        let shown = format!("{token:?}");
        assert!(!shown.contains(&token.secret), "{shown}");
        assert!(shown.contains(token.key_id.as_str()));
    }

    #[test]
    fn digests_compare_by_value() {
        assert!(digests_equal(&[1; 32], &[1; 32]));
        let mut other = [1; 32];
        other[31] = 2;
        assert!(!digests_equal(&[1; 32], &other));
    }
}

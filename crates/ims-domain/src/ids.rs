//! Validated identifiers. Each id is also a NATS subject token, so none of them can ever hold a
//! `.`, `*`, `>` or whitespace: the parsers below accept only the characters of DESIGN.md section 2.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// A region id: `^[a-z][a-z0-9-]{1,31}$`, such as `eu-west-0`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegionId(String);

/// A tenant id: `^[a-z0-9][a-z0-9_-]{0,63}$`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantId(String);

/// An organization id (a group of tenants, as in Huawei's and AWS's organization sharing): the
/// shape of a tenant id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrganizationId(String);

impl OrganizationId {
    /// Parses an organization id, or says which rule `value` breaks.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        TenantId::parse(value).map(|id| Self(id.0)).map_err(|_| {
            DomainError::invalid_argument(format!(
                "invalid organization id {value:?}: expected 1 to 64 characters of a-z, 0-9, '_' \
                 and '-', starting with a letter or digit (for example \"acme-group\")"
            ))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrganizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image id: a UUID, assigned by the server (version 7, so ids sort by creation time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImageId([u8; 16]);

impl RegionId {
    /// Parses a region id, or says which rule `value` breaks.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let bytes = value.as_bytes();
        let shape_ok = (2..=32).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !shape_ok {
            return Err(DomainError::invalid_argument(format!(
                "invalid region id {value:?}: expected 2 to 32 characters of a-z, 0-9 and '-', \
                 starting with a letter (for example \"eu-west-0\")"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TenantId {
    /// Parses a tenant id, or says which rule `value` breaks.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let bytes = value.as_bytes();
        let shape_ok = (1..=64).contains(&bytes.len())
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_');
        if !shape_ok {
            return Err(DomainError::invalid_argument(format!(
                "invalid tenant id {value:?}: expected 1 to 64 characters of a-z, 0-9, '_' and \
                 '-', starting with a letter or digit (for example \"acme-prod\")"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ImageId {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the hyphenated UUID form (`0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f`), any case.
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let invalid = || {
            DomainError::invalid_argument(format!(
                "invalid image id {value:?}: expected a UUID such as \
                 \"0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f\""
            ))
        };
        // Only the hyphenated form: the uuid crate also reads the simple, braced and URN forms.
        match uuid::Uuid::try_parse(value) {
            Ok(id) if value.len() == 36 => Ok(Self(id.into_bytes())),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Encoded in a buffer on the stack: ids are printed on hot paths (keys, feeds, JSON).
        let mut buffer = uuid::Uuid::encode_buffer();
        f.write_str(
            uuid::Uuid::from_bytes(self.0)
                .hyphenated()
                .encode_lower(&mut buffer),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_hold_subject_wildcards_dots_or_whitespace() {
        for bad in ["a.b", "a*", "a>", "a b", "a\tb", "", "A", "-a"] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} was accepted");
            assert!(RegionId::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(TenantId::parse("t_1-x").is_ok());
        assert!(RegionId::parse("eu-west-0").is_ok());
        assert!(RegionId::parse("e").is_err());
        assert!(TenantId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn tenant_and_region_ids_print_and_read_as_given() {
        let tenant = TenantId::parse("t_1-x").unwrap();
        let region = RegionId::parse("eu-west-0").unwrap();
        assert_eq!(
            (tenant.as_str(), tenant.to_string()),
            ("t_1-x", "t_1-x".into())
        );
        assert_eq!(
            (region.as_str(), region.to_string()),
            ("eu-west-0", "eu-west-0".into())
        );
    }

    #[test]
    fn an_image_id_reads_back_what_it_prints() {
        let id = ImageId::from_bytes([
            0x01, 0x92, 0xf0, 0xc1, 0x7a, 0x3e, 0x7c, 0x2b, 0x9d, 0x4e, 0x1a, 0x2b, 0x3c, 0x4d,
            0x5e, 0x6f,
        ]);
        let text = id.to_string();
        assert_eq!(text, "0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f");
        assert_eq!(ImageId::parse(&text).unwrap(), id);
        assert!(ImageId::parse("0192f0c1x7a3e-7c2b-9d4e-1a2b3c4d5e6f").is_err());
        assert!(ImageId::parse("not-a-uuid").is_err());
        // Other forms of the same UUID are not ids on the wire.
        for other in [
            "0192f0c17a3e7c2b9d4e1a2b3c4d5e6f",
            "{0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f}",
            "urn:uuid:0192f0c1-7a3e-7c2b-9d4e-1a2b3c4d5e6f",
        ] {
            assert!(ImageId::parse(other).is_err(), "{other} was accepted");
        }
        assert_eq!(
            ImageId::parse("0192F0C1-7A3E-7C2B-9D4E-1A2B3C4D5E6F").unwrap(),
            id
        );
    }
}

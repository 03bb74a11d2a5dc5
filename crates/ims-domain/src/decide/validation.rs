//! Field checks: every limit of DESIGN.md section 11, each refusal naming the field and what
//! would be accepted.

use crate::limits::*;
use crate::{DiskKind, DomainError, FileFormat, Os, SharingPolicy, TenantId};
use std::collections::BTreeMap;

/// Names: 1..=128 letters, digits, space, `.`, `_`, `-`, not starting or ending with a space.
pub(super) fn check_name(name: &str, policy: &SharingPolicy) -> Result<(), DomainError> {
    let chars = name.chars().count();
    let allowed = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'));
    if chars == 0
        || chars > policy.name_chars_max
        || !allowed
        || name.starts_with(' ')
        || name.ends_with(' ')
    {
        return Err(DomainError::invalid_argument(format!(
            "invalid image name {name:?}: expected 1 to {} letters, digits, spaces, '.', '_' or \
             '-', not starting or ending with a space",
            policy.name_chars_max
        )));
    }
    Ok(())
}

pub(super) fn check_os(disk: DiskKind, os: Option<&Os>) -> Result<(), DomainError> {
    match (disk, os) {
        (DiskKind::Data, Some(_)) => Err(DomainError::invalid_argument(
            "a data disk image has no os; leave os out for disk \"data\"",
        )),
        (DiskKind::System | DiskKind::FullEcs, None) => Err(DomainError::invalid_argument(
            "os is missing; system and full_ecs images need os {platform, version, arch}",
        )),
        (_, Some(os)) => {
            check_text("os.platform", &os.platform, OS_FIELD_CHARS_MAX)?;
            check_text("os.version", &os.version, OS_FIELD_CHARS_MAX)?;
            check_text("os.arch", &os.arch, OS_FIELD_CHARS_MAX)?;
            if [&os.platform, &os.version, &os.arch]
                .iter()
                .any(|f| f.trim().is_empty())
            {
                return Err(DomainError::invalid_argument(format!(
                    "os {{platform: {:?}, version: {:?}, arch: {:?}}} has an empty field; all \
                     three are required",
                    os.platform, os.version, os.arch
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The tenants one share or unshare may name.
pub(super) fn check_share_targets(tenants: &[TenantId]) -> Result<(), DomainError> {
    if tenants.len() > SHARE_TARGETS_MAX {
        return Err(DomainError::invalid_argument(format!(
            "tenants names {} tenants; at most {SHARE_TARGETS_MAX} are accepted at once, as many \
             as an image may have members",
            tenants.len()
        )));
    }
    Ok(())
}

/// A value shown in a message: whole when short, else its start, so that a refusal of a 60 KB
/// field names it without repeating it.
pub(super) fn preview(value: &str) -> String {
    const SHOWN_CHARS: usize = 40;
    if value.chars().count() <= SHOWN_CHARS {
        format!("{value:?}")
    } else {
        let start: String = value.chars().take(SHOWN_CHARS).collect();
        format!("{start:?}…")
    }
}

/// Free text of at most `max_chars` characters.
pub(super) fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), DomainError> {
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(DomainError::invalid_argument(format!(
            "{field} {} is {chars} characters; at most {max_chars} are accepted",
            preview(value)
        )));
    }
    Ok(())
}

/// An identifier or URL: 1 to `max_chars` printable ASCII characters.
pub(super) fn check_ascii_id(
    field: &str,
    value: &str,
    max_chars: usize,
) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > max_chars || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::invalid_argument(format!(
            "{field} {} is not valid; expected 1 to {max_chars} printable ASCII characters \
             without spaces ({} given)",
            preview(value),
            value.chars().count()
        )));
    }
    Ok(())
}

pub(super) fn check_min_disk(min_disk_gb: u32, policy: &SharingPolicy) -> Result<(), DomainError> {
    if min_disk_gb == 0 || min_disk_gb > policy.min_disk_gb_max {
        return Err(DomainError::invalid_argument(format!(
            "min_disk_gb {min_disk_gb} is out of range; expected 1 to {}",
            policy.min_disk_gb_max
        )));
    }
    Ok(())
}

pub(super) fn check_tags(
    tags: &BTreeMap<String, String>,
    policy: &SharingPolicy,
) -> Result<(), DomainError> {
    if tags.len() > policy.tags_max {
        return Err(DomainError::invalid_argument(format!(
            "{} tags given; an image has at most {} tags",
            tags.len(),
            policy.tags_max
        )));
    }
    for (key, value) in tags {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > policy.tag_key_chars_max {
            return Err(DomainError::invalid_argument(format!(
                "tag key {key:?} must be 1 to {} characters",
                policy.tag_key_chars_max
            )));
        }
        if value.chars().count() > policy.tag_value_chars_max {
            return Err(DomainError::invalid_argument(format!(
                "value of tag {key:?} ({value:?}) is longer than {} characters",
                policy.tag_value_chars_max
            )));
        }
    }
    Ok(())
}

pub(super) fn check_description(
    description: &str,
    policy: &SharingPolicy,
) -> Result<(), DomainError> {
    if description.chars().count() > policy.description_chars_max {
        return Err(DomainError::invalid_argument(format!(
            "description is {} characters; at most {} are accepted",
            description.chars().count(),
            policy.description_chars_max
        )));
    }
    Ok(())
}

pub(super) fn check_checksum(checksum: &str) -> Result<(), DomainError> {
    if checksum.len() != 64 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DomainError::invalid_argument(format!(
            "checksum_sha256 {checksum:?} is not a SHA-256 digest; expected 64 hex digits"
        )));
    }
    Ok(())
}

/// Parses a file format name as accepted on the wire.
pub fn parse_file_format(value: &str) -> Result<FileFormat, DomainError> {
    FileFormat::ALL
        .into_iter()
        .find(|f| f.as_str() == value)
        .ok_or_else(|| {
            let names: Vec<&str> = FileFormat::ALL.iter().map(|f| f.as_str()).collect();
            DomainError::invalid_argument(format!(
                "unknown file format {value:?}; expected one of {}",
                names.join(", ")
            ))
        })
}

/// Image family names: the charset of tenant ids (GCP's families are lower-case names too).
pub fn check_family(family: &str) -> Result<(), DomainError> {
    let bytes = family.as_bytes();
    let shape_ok = (1..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if !shape_ok {
        return Err(DomainError::invalid_argument(format!(
            "invalid family {}: expected 1 to 64 characters of a-z, 0-9, '_' and '-', starting \
             with a letter or digit (for example \"web-server\")",
            preview(family)
        )));
    }
    Ok(())
}

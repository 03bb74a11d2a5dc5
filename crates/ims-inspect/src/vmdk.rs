//! VMDK: a sparse extent (magic `KDMV`, little-endian header) with an embedded text descriptor,
//! or a bare text descriptor (`# Disk DescriptorFile`). Accepted: `monolithicSparse` and
//! `streamOptimized`, whose extents are the file itself; any extent naming a path is refused.

use crate::{field, Format, Inspection, Refusal, Regions};

const MAGIC: [u8; 4] = *b"KDMV";
const DESCRIPTOR_START: &[u8] = b"# Disk DescriptorFile";
const SECTOR: u64 = 512;

/// The largest embedded descriptor read (qemu writes 20 sectors).
const DESCRIPTOR_BYTES_MAX: u64 = 64 * 1024;

const ACCEPTED_CREATE_TYPES: [&str; 2] = ["monolithicSparse", "streamOptimized"];

pub fn detect(regions: &Regions) -> Option<Result<Inspection, Refusal>> {
    let head = regions.head;
    if head.get(..4)? == MAGIC {
        Some(sparse(head))
    } else if head.starts_with(DESCRIPTOR_START) {
        // A descriptor with no data of its own points at other files: never accepted.
        Some(descriptor(head).and_then(|_| {
            Err(Refusal::VmdkDescriptor(
                "a bare descriptor file has no data of its own".into(),
            ))
        }))
    } else {
        None
    }
}

fn le_u64(bytes: &[u8], at: usize) -> Result<u64, Refusal> {
    field::<8>(bytes, at, Format::Vmdk).map(u64::from_le_bytes)
}

fn sparse(head: &[u8]) -> Result<Inspection, Refusal> {
    let capacity_sectors = le_u64(head, 12)?;
    let descriptor_offset = le_u64(head, 28)?;
    let descriptor_sectors = le_u64(head, 36)?;
    if descriptor_offset == 0 || descriptor_sectors == 0 {
        return Err(Refusal::VmdkDescriptor(
            "the sparse extent has no embedded descriptor".into(),
        ));
    }
    let start = descriptor_offset.saturating_mul(SECTOR);
    let length = descriptor_sectors
        .saturating_mul(SECTOR)
        .min(DESCRIPTOR_BYTES_MAX);
    let end = start.saturating_add(length);
    if end > head.len() as u64 {
        return Err(Refusal::Truncated {
            format: Format::Vmdk,
            needed: usize::try_from(end).unwrap_or(usize::MAX),
            available: head.len(),
        });
    }
    descriptor(&head[start as usize..end as usize])?;
    Ok(Inspection {
        format: Format::Vmdk,
        virtual_size: Some(capacity_sectors.saturating_mul(SECTOR)),
        partition_table: None,
    })
}

/// Checks the descriptor text: its create type, and that no extent names a path.
fn descriptor(bytes: &[u8]) -> Result<(), Refusal> {
    let text_end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(&bytes[..text_end])
        .map_err(|_| Refusal::VmdkDescriptor("the descriptor is not text".into()))?;
    let mut create_type = None;
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("createType=") {
            create_type = Some(value.trim_matches('"').to_owned());
        } else if ["RW ", "RDONLY ", "NOACCESS "]
            .iter()
            .any(|access| line.starts_with(access))
        {
            let name = line.split('"').nth(1).unwrap_or_default();
            if name.contains('/') {
                return Err(Refusal::VmdkExtentPath(name.to_owned()));
            }
        }
    }
    match create_type {
        Some(kind) if ACCEPTED_CREATE_TYPES.contains(&kind.as_str()) => Ok(()),
        Some(kind) => Err(Refusal::VmdkCreateType(kind)),
        None => Err(Refusal::VmdkDescriptor("no createType line".into())),
    }
}

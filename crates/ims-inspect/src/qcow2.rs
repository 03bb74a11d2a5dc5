//! qcow2: magic `QFI\xfb`, big-endian header (version 2 or 3). Refused: a backing file, an
//! external data file (incompatible feature bit 2, or its header extension), unknown
//! incompatible features.

use crate::{field, Format, Inspection, Refusal, Regions};

const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Incompatible feature bits qemu defines: dirty, corrupt, external data file, compression
/// type, extended L2 entries.
const KNOWN_INCOMPATIBLE: u64 = 0b1_1111;
const EXTERNAL_DATA_FILE: u64 = 1 << 2;

/// Header extension types: the end marker, and the external data file's name.
const EXTENSION_END: u32 = 0;
const EXTENSION_DATA_FILE: u32 = 0x4441_5441;

/// Header extensions read at most (qemu writes a handful).
const EXTENSIONS_MAX: usize = 64;

pub fn detect(regions: &Regions) -> Option<Result<Inspection, Refusal>> {
    (regions.head.get(..4)? == MAGIC).then(|| check(regions.head))
}

fn be_u32(bytes: &[u8], at: usize) -> Result<u32, Refusal> {
    field::<4>(bytes, at, Format::Qcow2).map(u32::from_be_bytes)
}

fn be_u64(bytes: &[u8], at: usize) -> Result<u64, Refusal> {
    field::<8>(bytes, at, Format::Qcow2).map(u64::from_be_bytes)
}

fn check(head: &[u8]) -> Result<Inspection, Refusal> {
    let version = be_u32(head, 4)?;
    if !(2..=3).contains(&version) {
        return Err(Refusal::Qcow2Version(version));
    }
    if be_u64(head, 8)? != 0 || be_u32(head, 16)? != 0 {
        return Err(Refusal::Qcow2BackingFile);
    }
    let virtual_size = be_u64(head, 24)?;
    // Version 2 headers are 72 bytes and have no feature fields.
    let header_length = if version == 3 {
        let incompatible = be_u64(head, 72)?;
        if incompatible & EXTERNAL_DATA_FILE != 0 {
            return Err(Refusal::Qcow2ExternalDataFile);
        }
        if incompatible & !KNOWN_INCOMPATIBLE != 0 {
            return Err(Refusal::Qcow2UnknownFeatures(
                incompatible & !KNOWN_INCOMPATIBLE,
            ));
        }
        be_u32(head, 100)? as usize
    } else {
        72
    };
    check_extensions(head, header_length)?;
    Ok(Inspection {
        format: Format::Qcow2,
        virtual_size: Some(virtual_size),
        partition_table: None,
    })
}

/// Walks the header extensions after the header: an external data file's name is refused even
/// when the feature bit was cleared.
fn check_extensions(head: &[u8], header_length: usize) -> Result<(), Refusal> {
    let mut at = header_length;
    for _ in 0..EXTENSIONS_MAX {
        let kind = be_u32(head, at)?;
        let length = be_u32(head, at + 4)? as usize;
        match kind {
            EXTENSION_END => return Ok(()),
            EXTENSION_DATA_FILE => return Err(Refusal::Qcow2ExternalDataFile),
            _ => at += 8 + length.div_ceil(8) * 8,
        }
    }
    Ok(())
}

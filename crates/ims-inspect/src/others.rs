//! The formats recognised by a signature alone: VHDX, VDI, ISO 9660, QED (refused), and the
//! partition tables of a raw disk.

use crate::{field, Format, Inspection, PartitionTable, Refusal, Regions};

fn found(format: Format, virtual_size: Option<u64>) -> Inspection {
    Inspection {
        format,
        virtual_size,
        partition_table: None,
    }
}

/// VHDX: the file type identifier `vhdxfile` at offset 0. (Its size lives in the metadata
/// region, which the inspector does not parse: reported unknown.)
pub fn detect_vhdx(regions: &Regions) -> Option<Result<Inspection, Refusal>> {
    regions
        .head
        .starts_with(b"vhdxfile")
        .then(|| Ok(found(Format::Vhdx, None)))
}

/// VDI: the signature 0xbeda107f (little-endian) at 0x40; the disk size at 0x170.
pub fn detect_vdi(regions: &Regions) -> Option<Result<Inspection, Refusal>> {
    let signature = regions.head.get(0x40..0x44)?;
    (signature == 0xbeda_107f_u32.to_le_bytes()).then(|| {
        let size = u64::from_le_bytes(field::<8>(regions.head, 0x170, Format::Vdi)?);
        Ok(found(Format::Vdi, Some(size)))
    })
}

/// ISO 9660: the primary volume descriptor `\x01CD001` at 32 KiB; its volume space size (u32,
/// little-endian, at +80) times its logical block size (u16, little-endian, at +128).
pub fn detect_iso(regions: &Regions) -> Option<Result<Inspection, Refusal>> {
    const DESCRIPTOR: usize = 32 * 1024;
    (regions.head.get(DESCRIPTOR..DESCRIPTOR + 6)? == b"\x01CD001").then(|| {
        let blocks = u32::from_le_bytes(field::<4>(regions.head, DESCRIPTOR + 80, Format::Iso)?);
        let block = u16::from_le_bytes(field::<2>(regions.head, DESCRIPTOR + 128, Format::Iso)?);
        Ok(Inspection {
            format: Format::Iso,
            virtual_size: Some(u64::from(blocks) * u64::from(block)),
            partition_table: partition_table(regions.head),
        })
    })
}

/// QED: magic `QED\0`. Detected so that it can be refused, whatever was declared.
pub fn detect_qed(regions: &Regions) -> Option<Result<Inspection, Refusal>> {
    (regions.head.get(..4)? == b"QED\0").then_some(Err(Refusal::Qed))
}

/// A GPT header at LBA 1, or an MBR boot signature.
pub fn partition_table(head: &[u8]) -> Option<PartitionTable> {
    if head.get(512..520) == Some(b"EFI PART") {
        Some(PartitionTable::Gpt)
    } else if head.get(510..512) == Some(&[0x55, 0xaa]) {
        Some(PartitionTable::Mbr)
    } else {
        None
    }
}

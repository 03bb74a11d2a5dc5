//! VHD: a 512-byte footer with the cookie `conectix` at the end of the file (and a copy at the
//! start of a dynamic disk), big-endian, with a one's-complement checksum.

use crate::{field, Format, Inspection, Refusal, Regions};

const COOKIE: &[u8; 8] = b"conectix";
const FOOTER_BYTES: usize = 512;

pub fn detect(regions: &Regions) -> Option<Result<Inspection, Refusal>> {
    let tail = regions.tail;
    let footer =
        if tail.len() >= FOOTER_BYTES && tail[tail.len() - FOOTER_BYTES..].starts_with(COOKIE) {
            &tail[tail.len() - FOOTER_BYTES..]
        } else if regions.head.starts_with(COOKIE) {
            // A dynamic disk's copy at the start; its footer at the end may be in a later write.
            regions.head
        } else {
            return None;
        };
    Some(check(footer))
}

fn check(footer: &[u8]) -> Result<Inspection, Refusal> {
    let found = u32::from_be_bytes(field::<4>(footer, 64, Format::Vhd)?);
    let body = footer.get(..FOOTER_BYTES).ok_or(Refusal::Truncated {
        format: Format::Vhd,
        needed: FOOTER_BYTES,
        available: footer.len(),
    })?;
    let sum = body
        .iter()
        .enumerate()
        .filter(|(at, _)| !(64..68).contains(at))
        .fold(0u32, |sum, (_, byte)| sum.wrapping_add(u32::from(*byte)));
    let expected = !sum;
    if found != expected {
        return Err(Refusal::VhdChecksum { found, expected });
    }
    let current_size = u64::from_be_bytes(field::<8>(footer, 48, Format::Vhd)?);
    Ok(Inspection {
        format: Format::Vhd,
        virtual_size: Some(current_size),
        partition_table: None,
    })
}

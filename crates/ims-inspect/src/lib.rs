//! The disk-image format inspector of ims (DESIGN.md section 14): says what format an image file
//! is, and its virtual size, from bounded regions of it (its first [`HEAD_BYTES`] and last
//! [`TAIL_BYTES`]), or why it is refused. It does no IO and runs no `qemu-img` on uploaded
//! bytes: the import worker streams a file and hands over the two regions.
//!
//! The refusals answer the format attacks that hit OpenStack: a qcow2 declared as raw
//! (CVE-2024-40767), a qcow2 with an external data file (CVE-2024-32498) or a backing file, a
//! VMDK whose descriptor names other files (CVE-2022-47951). The rules follow oslo.utils'
//! `format_inspector`: the declared format must equal the detected one; more than one match is
//! refused; raw only when nothing else matches; qcow2 with a backing file, an external data
//! file or unknown incompatible features is refused; VMDK only `monolithicSparse` or
//! `streamOptimized`, with no extent path holding `/`; QED is refused; a VHD footer must carry
//! a valid checksum.
//!
//! Modules: one per format family (`qcow2`, `vmdk`, `vhd`, and the small signatures in
//! `others`), each a detector and its checks.

mod others;
mod qcow2;
mod vhd;
mod vmdk;

use std::fmt;

/// How much of the start of a file the inspector reads: a qcow2 header with its extensions, a
/// VMDK's embedded descriptor, an ISO's primary volume descriptor (at 32 KiB) and a partition
/// table all lie well within it.
pub const HEAD_BYTES: usize = 1 << 20;

/// How much of the end of a file the inspector reads: a VHD footer.
pub const TAIL_BYTES: usize = 512;

/// The formats ims can import (DESIGN.md section 2 names zvhd and zvhd2 too, which have no
/// public layout to inspect, so they are refused for import).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Iso,
    Qed,
}

impl Format {
    pub const ALL: [Format; 8] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vhd,
        Format::Vhdx,
        Format::Vdi,
        Format::Iso,
        Format::Qed,
    ];

    /// The name on the wire (as in `source.file.format`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Iso => "iso",
            Format::Qed => "qed",
        }
    }

    /// The format named `name`, if the inspector knows it.
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A partition table found at the start of a raw image or an ISO (informative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionTable {
    Gpt,
    Mbr,
}

/// What the inspector found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    pub format: Format,
    /// The size of the disk the image describes, when the header says it (a raw image: its
    /// file size).
    pub virtual_size: Option<u64>,
    pub partition_table: Option<PartitionTable>,
}

/// Why an image file is refused. Each message says what was found and what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the file was declared {declared} but is {detected}; declare the format it has")]
    Mismatch { declared: Format, detected: Format },
    #[error("the file matches more than one format ({}); an image must be exactly one", list(.0))]
    Ambiguous(Vec<Format>),
    #[error("QED images are refused: the format is deprecated and unsafe to inspect; convert it to qcow2")]
    Qed,
    #[error(
        "the {format} header is truncated: {needed} bytes are needed, the file has {available}"
    )]
    Truncated {
        format: Format,
        needed: usize,
        available: usize,
    },
    #[error("the qcow2 image has a backing file; only self-contained images are accepted (rebase or convert it)")]
    Qcow2BackingFile,
    #[error("the qcow2 image uses an external data file; only self-contained images are accepted")]
    Qcow2ExternalDataFile,
    #[error("the qcow2 image has unknown incompatible features {0:#x}; only features 0-4 are understood")]
    Qcow2UnknownFeatures(u64),
    #[error("the qcow2 image has version {0}; versions 2 and 3 are accepted")]
    Qcow2Version(u32),
    #[error("the VMDK create type {0:?} is refused; only monolithicSparse and streamOptimized are accepted")]
    VmdkCreateType(String),
    #[error("the VMDK descriptor names the extent {0:?}; extents may not name paths (no '/')")]
    VmdkExtentPath(String),
    #[error("the VMDK descriptor is invalid: {0}")]
    VmdkDescriptor(String),
    #[error(
        "the VHD footer checksum is {found:#010x}, not {expected:#010x}: the footer is corrupt"
    )]
    VhdChecksum { found: u32, expected: u32 },
    #[error("{0} images cannot be inspected and are refused for import")]
    NotInspectable(String),
}

fn list(formats: &[Format]) -> String {
    formats
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The regions of a file the inspector reads.
#[derive(Clone, Copy, Debug)]
pub struct Regions<'a> {
    /// The first [`HEAD_BYTES`] of the file (all of it when shorter).
    pub head: &'a [u8],
    /// The last [`TAIL_BYTES`] of the file (all of it when shorter).
    pub tail: &'a [u8],
    /// The whole file's length.
    pub file_size: u64,
}

/// One format's view of a file: whether it is that format, and if so the checks it passes.
type Detector = fn(&Regions) -> Option<Result<Inspection, Refusal>>;

const DETECTORS: [Detector; 7] = [
    qcow2::detect,
    vmdk::detect,
    vhd::detect,
    others::detect_vhdx,
    others::detect_vdi,
    others::detect_iso,
    others::detect_qed,
];

/// Says what `regions` are and checks them against `declared`. `declared` is what the owner
/// said the file is (`source.file.format`, or the upload's format).
pub fn inspect(declared: &str, regions: &Regions) -> Result<Inspection, Refusal> {
    let declared =
        Format::parse(declared).ok_or_else(|| Refusal::NotInspectable(declared.into()))?;
    let mut found: Vec<Result<Inspection, Refusal>> = DETECTORS
        .iter()
        .filter_map(|detect| detect(regions))
        .collect();
    let formats: Vec<Format> = found
        .iter()
        .map(|result| match result {
            Ok(inspection) => inspection.format,
            Err(refusal) => format_of(refusal).unwrap_or(declared),
        })
        .collect();
    if formats.contains(&Format::Qed) {
        return Err(Refusal::Qed);
    }
    // Two formats at once cannot both be trusted.
    if found.len() > 1 {
        return Err(Refusal::Ambiguous(formats));
    }
    let inspection = match found.pop() {
        Some(result) => result?,
        None => Inspection {
            format: Format::Raw,
            virtual_size: Some(regions.file_size),
            partition_table: others::partition_table(regions.head),
        },
    };
    if inspection.format != declared {
        return Err(Refusal::Mismatch {
            declared,
            detected: inspection.format,
        });
    }
    Ok(inspection)
}

/// The format a refusal was made for, where it names one implicitly.
fn format_of(refusal: &Refusal) -> Option<Format> {
    Some(match refusal {
        Refusal::Truncated { format, .. } => *format,
        Refusal::Qcow2BackingFile
        | Refusal::Qcow2ExternalDataFile
        | Refusal::Qcow2UnknownFeatures(_)
        | Refusal::Qcow2Version(_) => Format::Qcow2,
        Refusal::VmdkCreateType(_) | Refusal::VmdkExtentPath(_) | Refusal::VmdkDescriptor(_) => {
            Format::Vmdk
        }
        Refusal::VhdChecksum { .. } => Format::Vhd,
        Refusal::Qed => Format::Qed,
        _ => return None,
    })
}

/// `bytes[at..at + N]`, or a truncation refusal for `format`.
fn field<const N: usize>(bytes: &[u8], at: usize, format: Format) -> Result<[u8; N], Refusal> {
    bytes
        .get(at..at + N)
        .and_then(|slice| slice.try_into().ok())
        .ok_or(Refusal::Truncated {
            format,
            needed: at + N,
            available: bytes.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(bytes: &[u8]) -> Regions<'_> {
        Regions {
            head: &bytes[..bytes.len().min(HEAD_BYTES)],
            tail: &bytes[bytes.len().saturating_sub(TAIL_BYTES)..],
            file_size: bytes.len() as u64,
        }
    }

    #[test]
    fn zeros_are_raw_and_declaring_them_otherwise_is_refused() {
        let zeros = vec![0u8; 4096];
        let inspection = inspect("raw", &regions(&zeros)).unwrap();
        assert_eq!(inspection.format, Format::Raw);
        assert_eq!(inspection.virtual_size, Some(4096));
        assert_eq!(
            inspect("qcow2", &regions(&zeros)),
            Err(Refusal::Mismatch {
                declared: Format::Qcow2,
                detected: Format::Raw
            })
        );
    }

    #[test]
    fn a_format_the_inspector_does_not_know_is_refused() {
        let refusal = inspect("zvhd2", &regions(&[0; 16])).unwrap_err();
        assert!(refusal.to_string().contains("zvhd2"), "{refusal}");
    }

    #[test]
    fn an_mbr_on_a_raw_image_is_reported() {
        let mut disk = vec![0u8; 4096];
        disk[510] = 0x55;
        disk[511] = 0xaa;
        let inspection = inspect("raw", &regions(&disk)).unwrap();
        assert_eq!(inspection.partition_table, Some(PartitionTable::Mbr));
        disk[512..520].copy_from_slice(b"EFI PART");
        let inspection = inspect("raw", &regions(&disk)).unwrap();
        assert_eq!(inspection.partition_table, Some(PartitionTable::Gpt));
    }
}

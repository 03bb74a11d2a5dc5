//! The inspector against real images made by `qemu-img` in the test (installed by `.ci/run`:
//! Debian's `qemu-utils`), a hand-made ISO header, and hostile variants of them.

use std::path::{Path, PathBuf};
use std::process::Command;

use ims_inspect::{inspect, Format, Inspection, Refusal, Regions, HEAD_BYTES, TAIL_BYTES};
use proptest::prelude::*;

const SIZE: u64 = 64 << 20;

struct Fixtures {
    dir: tempfile::TempDir,
}

impl Fixtures {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `qemu-img create -f FORMAT [-o OPTIONS] NAME 64M`.
    fn create(&self, name: &str, format: &str, options: &[&str]) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut command = Command::new("qemu-img");
        command.args(["create", "-q", "-f", format]);
        for option in options {
            command.args(["-o", option]);
        }
        let status = command
            .arg(&path)
            .arg(SIZE.to_string())
            .status()
            .expect("qemu-img is needed for these tests: apt-get install qemu-utils");
        assert!(status.success(), "qemu-img create {name}");
        path
    }
}

fn bytes_of(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn inspect_bytes(declared: &str, bytes: &[u8], file_size: u64) -> Result<Inspection, Refusal> {
    let regions = Regions {
        head: &bytes[..bytes.len().min(HEAD_BYTES)],
        tail: &bytes[bytes.len().saturating_sub(TAIL_BYTES)..],
        file_size,
    };
    inspect(declared, &regions)
}

fn inspect_file(declared: &str, path: &Path) -> Result<Inspection, Refusal> {
    let bytes = bytes_of(path);
    inspect_bytes(declared, &bytes, bytes.len() as u64)
}

/// A minimal ISO 9660 image: a primary volume descriptor of 32,768 blocks of 2048 bytes.
fn iso() -> Vec<u8> {
    let mut bytes = vec![0u8; 34 * 1024];
    let pvd = &mut bytes[32 * 1024..];
    pvd[..7].copy_from_slice(b"\x01CD001\x01");
    pvd[80..84].copy_from_slice(&32_768u32.to_le_bytes());
    pvd[84..88].copy_from_slice(&32_768u32.to_be_bytes());
    pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
    bytes
}

#[test]
fn every_supported_format_is_detected_with_its_virtual_size() {
    let fixtures = Fixtures::new();
    let cases = [
        ("t.qcow2", "qcow2", vec![], "qcow2", Some(SIZE)),
        (
            "t2.qcow2",
            "qcow2",
            vec!["compat=0.10"],
            "qcow2",
            Some(SIZE),
        ),
        ("sparse.vmdk", "vmdk", vec![], "vmdk", Some(SIZE)),
        (
            "stream.vmdk",
            "vmdk",
            vec!["subformat=streamOptimized"],
            "vmdk",
            Some(SIZE),
        ),
        ("t.vdi", "vdi", vec![], "vdi", Some(SIZE)),
        ("t.vhdx", "vhdx", vec![], "vhdx", None),
        ("t.raw", "raw", vec![], "raw", Some(SIZE)),
    ];
    for (name, qemu_format, options, declared, size) in cases {
        let path = fixtures.create(name, qemu_format, &options);
        let inspection = inspect_file(declared, &path)
            .unwrap_or_else(|refusal| panic!("{name} was refused: {refusal}"));
        assert_eq!(inspection.format.as_str(), declared, "{name}");
        assert_eq!(inspection.virtual_size, size, "{name}");
    }
    // qemu rounds VHD sizes to a disk geometry, so the size is close to, not exactly, 64 MiB.
    for (name, options) in [
        ("dynamic.vhd", vec![]),
        ("fixed.vhd", vec!["subformat=fixed"]),
    ] {
        let path = fixtures.create(name, "vpc", &options);
        let inspection = inspect_file("vhd", &path).unwrap();
        assert_eq!(inspection.format, Format::Vhd, "{name}");
        let size = inspection.virtual_size.unwrap();
        assert!(size.abs_diff(SIZE) < 1 << 20, "{name}: {size}");
    }
    let iso = iso();
    let inspection = inspect_bytes("iso", &iso, iso.len() as u64).unwrap();
    assert_eq!(inspection.virtual_size, Some(32_768 * 2048));
}

#[test]
fn a_qcow2_declared_as_raw_is_refused() {
    let fixtures = Fixtures::new();
    let path = fixtures.create("t.qcow2", "qcow2", &[]);
    assert_eq!(
        inspect_file("raw", &path),
        Err(Refusal::Mismatch {
            declared: Format::Raw,
            detected: Format::Qcow2
        })
    );
}

#[test]
fn a_qcow2_with_a_backing_file_or_an_external_data_file_is_refused() {
    let fixtures = Fixtures::new();
    let passwd = fixtures.dir.path().join("passwd");
    std::fs::write(&passwd, b"root:x:0:0::/root:/bin/sh\n").unwrap();
    let backed = fixtures.dir.path().join("backed.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&passwd)
        .arg(&backed)
        .arg(SIZE.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        inspect_file("qcow2", &backed),
        Err(Refusal::Qcow2BackingFile)
    );
    let data_file = fixtures.dir.path().join("data.raw");
    let external = fixtures.create(
        "external.qcow2",
        "qcow2",
        &[&format!("data_file={}", data_file.display())],
    );
    assert_eq!(
        inspect_file("qcow2", &external),
        Err(Refusal::Qcow2ExternalDataFile)
    );
}

#[test]
fn a_flat_vmdk_and_an_extent_with_a_path_are_refused() {
    let fixtures = Fixtures::new();
    let flat = fixtures.create("flat.vmdk", "vmdk", &["subformat=monolithicFlat"]);
    let refusal = inspect_file("vmdk", &flat).unwrap_err();
    assert!(
        matches!(refusal, Refusal::VmdkCreateType(ref kind) if kind == "monolithicFlat"),
        "{refusal}"
    );
    let sparse = fixtures.create("sparse.vmdk", "vmdk", &[]);
    let mut bytes = bytes_of(&sparse);
    let name = b"\"sparse.vmdk\"";
    let at = bytes
        .windows(name.len())
        .position(|window| window == name)
        .unwrap();
    bytes[at..at + name.len()].copy_from_slice(b"\"../etc.vmdk\"");
    assert_eq!(
        inspect_bytes("vmdk", &bytes, bytes.len() as u64),
        Err(Refusal::VmdkExtentPath("../etc.vmdk".into()))
    );
}

#[test]
fn qed_is_refused_whatever_was_declared() {
    let fixtures = Fixtures::new();
    let qed = fixtures.create("t.qed", "qed", &[]);
    assert_eq!(inspect_file("qed", &qed), Err(Refusal::Qed));
    assert_eq!(inspect_file("raw", &qed), Err(Refusal::Qed));
}

#[test]
fn truncated_headers_and_corrupt_footers_are_refused() {
    let fixtures = Fixtures::new();
    let qcow2 = bytes_of(&fixtures.create("t.qcow2", "qcow2", &[]));
    let refusal = inspect_bytes("qcow2", &qcow2[..40], 40).unwrap_err();
    assert!(
        matches!(
            refusal,
            Refusal::Truncated {
                format: Format::Qcow2,
                ..
            }
        ),
        "{refusal}"
    );
    let vmdk = bytes_of(&fixtures.create("t.vmdk", "vmdk", &[]));
    let refusal = inspect_bytes("vmdk", &vmdk[..600], 600).unwrap_err();
    assert!(
        matches!(
            refusal,
            Refusal::Truncated {
                format: Format::Vmdk,
                ..
            }
        ),
        "{refusal}"
    );
    let mut vhd = bytes_of(&fixtures.create("fixed.vhd", "vpc", &["subformat=fixed"]));
    let footer = vhd.len() - 512;
    vhd[footer + 48] ^= 0xff; // the size changes, the checksum does not
    let refusal = inspect_bytes("vhd", &vhd, vhd.len() as u64).unwrap_err();
    assert!(matches!(refusal, Refusal::VhdChecksum { .. }), "{refusal}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_inspector(
        bytes in proptest::collection::vec(any::<u8>(), 0..70_000),
        magic in prop::sample::select(vec![&b"QFI\xfb"[..], b"KDMV", b"QED\0", b"vhdxfile", b"conectix", b"# Disk DescriptorFile", b""]),
        declared in prop::sample::select(vec!["raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "qed", "zvhd"]),
    ) {
        let mut bytes = bytes;
        let prefix = magic.len().min(bytes.len());
        bytes[..prefix].copy_from_slice(&magic[..prefix]);
        let _ = inspect_bytes(declared, &bytes, bytes.len() as u64);
    }
}

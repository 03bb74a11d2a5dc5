//! Snapshots of a read model: every row of it at its checkpoint, in one file, so that an audit
//! as of a past position starts from the nearest snapshot at or before it rather than from
//! position 1.
//!
//! A file is `<dir>/<model>.<checkpoint, 20 digits>.snapshot`: `IMSSNAP1`, the checkpoint (u64
//! big-endian), then each row as key length (u32 big-endian), key, value length, value, and last
//! the SHA-256 of everything before it. It is written to a temporary name, synced and renamed,
//! so a crash leaves the old snapshots or the new one, never half of one; a file whose checksum
//! does not match is refused.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::store::{Entry, Store};
use crate::ProjectionError;

const MAGIC: &[u8; 8] = b"IMSSNAP1";

/// How many snapshots of a model are kept: the oldest go as new ones come.
pub const SNAPSHOTS_KEPT: usize = 8;

fn file_name(model: &str, position: u64) -> String {
    format!("{model}.{position:020}.snapshot")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProjectionError + '_ {
    move |error| ProjectionError::Snapshot(format!("{}: {error}", path.display()))
}

/// Writes a snapshot of `store` (named `model`) into `dir`, then keeps only the newest
/// [`SNAPSHOTS_KEPT`]. Returns the file's path.
pub fn write(dir: &Path, model: &str, store: &Store) -> Result<PathBuf, ProjectionError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let position = store.checkpoint()?;
    let path = dir.join(file_name(model, position));
    let temporary = dir.join(format!(".{}.partial", file_name(model, position)));
    let file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
    let mut out = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
    };
    out.write_all(MAGIC).map_err(io(&temporary))?;
    out.write_all(&position.to_be_bytes())
        .map_err(io(&temporary))?;
    for row in store.scan_from(b"", Vec::new()) {
        let (key, value) = row?;
        for part in [&key, &value] {
            let len = u32::try_from(part.len()).expect("keys and values are far under 4 GiB");
            out.write_all(&len.to_be_bytes()).map_err(io(&temporary))?;
            out.write_all(part).map_err(io(&temporary))?;
        }
    }
    let digest = out.hasher.finalize();
    let mut file = out.inner;
    file.write_all(&digest).map_err(io(&temporary))?;
    let file = file
        .into_inner()
        .map_err(|e| io(&temporary)(e.into_error()))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    prune(dir, model)?;
    Ok(path)
}

/// The snapshots of `model` in `dir`, oldest first, with their positions.
pub fn list(dir: &Path, model: &str) -> Result<Vec<(u64, PathBuf)>, ProjectionError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(dir)(error)),
    };
    let prefix = format!("{model}.");
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let position = name
                .strip_prefix(&prefix)?
                .strip_suffix(".snapshot")?
                .parse()
                .ok()?;
            Some((position, entry.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The newest snapshot of `model` at or before `position`.
pub fn nearest(
    dir: &Path,
    model: &str,
    position: u64,
) -> Result<Option<(u64, PathBuf)>, ProjectionError> {
    Ok(list(dir, model)?
        .into_iter()
        .rev()
        .find(|(at, _)| *at <= position))
}

/// Reads a snapshot: its position and rows, once its checksum is verified.
pub fn read(path: &Path) -> Result<(u64, Vec<Entry>), ProjectionError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let corrupt = |why: &str| ProjectionError::Snapshot(format!("{}: {why}", path.display()));
    if bytes.len() < MAGIC.len() + 8 + 32 || &bytes[..8] != MAGIC {
        return Err(corrupt("not a snapshot"));
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err(corrupt("its checksum does not match; it is damaged"));
    }
    let position = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
    let mut rows = Vec::new();
    let mut rest = &body[16..];
    while !rest.is_empty() {
        let mut part = || -> Option<Vec<u8>> {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let value = rest.get(4..4 + len)?.to_vec();
            rest = &rest[4 + len..];
            Some(value)
        };
        let key = part().ok_or_else(|| corrupt("a row is cut short"))?;
        let value = part().ok_or_else(|| corrupt("a row is cut short"))?;
        rows.push((key, value));
    }
    Ok((position, rows))
}

/// Removes all but the newest [`SNAPSHOTS_KEPT`] snapshots of `model`.
fn prune(dir: &Path, model: &str) -> Result<(), ProjectionError> {
    let found = list(dir, model)?;
    for (_, path) in found
        .iter()
        .take(found.len().saturating_sub(SNAPSHOTS_KEPT))
    {
        std::fs::remove_file(path).map_err(io(path))?;
    }
    Ok(())
}

/// A writer that hashes what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

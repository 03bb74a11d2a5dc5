//! Snapshots of a read model, so that an audit as of a past position starts from the nearest
//! snapshot at or before it rather than from position 1, and reads only the rows it needs.
//!
//! A snapshot is either *whole* (every row of the model at its position) or a *delta* (only the
//! rows changed since an older snapshot, its base, removals included). The projector writes a
//! delta every N events, which costs what those events changed, and a whole one now and then, so
//! that a chain (a whole snapshot and the deltas on top of it) stays short. Each file is
//! `<dir>/<model>.<position>.<base>.snap` (positions in 20 digits, base 0 for a whole one); its
//! format is in [`file`]. Files are written under a temporary name, synced and renamed, so a
//! crash leaves whole files only; every block is checked against its SHA-256 when read.

mod file;

use std::path::{Path, PathBuf};

pub(crate) use file::FileWriter;
pub use file::{FileReader, Row};

use crate::store::Store;
use crate::ProjectionError;

/// How many whole snapshots of a model are kept, with the deltas on top of them; older files go.
pub const WHOLE_KEPT: usize = 8;

/// The name a model's snapshots go by: its name and key layout (`catalog.v4`), so that a new
/// layout never reads the rows of an older one.
pub fn model_name<F: crate::Fold>() -> String {
    format!("{}.v{}", F::NAME, F::LAYOUT)
}

/// A snapshot file, as its name describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub position: u64,
    /// 0 for a whole snapshot; else the position of the snapshot this delta changes.
    pub base: u64,
    pub path: PathBuf,
}

impl SnapshotFile {
    pub fn is_whole(&self) -> bool {
        self.base == 0
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProjectionError + '_ {
    move |error| ProjectionError::Snapshot(format!("{}: {error}", path.display()))
}

fn writer(
    dir: &Path,
    model: &str,
    position: u64,
    base: u64,
) -> Result<FileWriter, ProjectionError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    FileWriter::create(
        dir.join(format!("{model}.{position:020}.{base:020}.snap")),
        position,
        base,
    )
}

/// Ends a file and makes its name durable, then drops what is no longer kept.
fn finish(dir: &Path, model: &str, out: FileWriter) -> Result<PathBuf, ProjectionError> {
    let path = out.finish()?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    prune(dir, model)?;
    Ok(path)
}

/// Writes a whole snapshot of `store` (named `model`) into `dir`. Returns the file's path.
pub fn write_whole(dir: &Path, model: &str, store: &Store) -> Result<PathBuf, ProjectionError> {
    let mut out = writer(dir, model, store.checkpoint()?, 0)?;
    for row in store.scan_from(b"", Vec::new()) {
        let (key, value) = row?;
        out.push(&key, Some(&value))?;
    }
    finish(dir, model, out)
}

/// Writes a delta of `store` over the snapshot at `base`: the current row (or its removal) of
/// each of `changed`, the keys changed since `base`, in order. `base` 0 makes it whole, which is
/// right when `changed` holds every key written since the model was empty.
pub fn write_delta<'k>(
    dir: &Path,
    model: &str,
    store: &Store,
    base: u64,
    changed: impl IntoIterator<Item = &'k Vec<u8>>,
) -> Result<PathBuf, ProjectionError> {
    let mut out = writer(dir, model, store.checkpoint()?, base)?;
    for key in changed {
        out.push(key, store.get(key)?.as_deref())?;
    }
    finish(dir, model, out)
}

/// The snapshots of `model` in `dir`, oldest first.
pub fn list(dir: &Path, model: &str) -> Result<Vec<SnapshotFile>, ProjectionError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(dir)(error)),
    };
    let prefix = format!("{model}.");
    let mut found: Vec<SnapshotFile> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (position, base) = name
                .strip_prefix(&prefix)?
                .strip_suffix(".snap")?
                .split_once('.')?;
            Some(SnapshotFile {
                position: position.parse().ok()?,
                base: base.parse().ok()?,
                path: entry.path(),
            })
        })
        .collect();
    found.sort_by_key(|file| file.position);
    Ok(found)
}

/// The files a reader stacks to see `file`'s model: `file`, its base, its base's base, down to
/// a whole snapshot, newest first; `None` if one of them is gone.
pub fn chain_of<'f>(
    files: &'f [SnapshotFile],
    file: &'f SnapshotFile,
) -> Option<Vec<&'f SnapshotFile>> {
    let mut chain = vec![file];
    let mut base = file.base;
    while base != 0 {
        let below = files.iter().find(|f| f.position == base && f.base < base)?;
        chain.push(below);
        base = below.base;
    }
    Some(chain)
}

/// The newest complete chain of `model` at or before `position`, opened (header and index
/// checked), newest first; `None` when there is none.
pub fn open_chain(
    dir: &Path,
    model: &str,
    position: u64,
) -> Result<Option<Vec<FileReader>>, ProjectionError> {
    let files = list(dir, model)?;
    let Some(chain) = files
        .iter()
        .rev()
        .filter(|file| file.position <= position)
        .find_map(|file| chain_of(&files, file))
    else {
        return Ok(None);
    };
    let mut readers = Vec::with_capacity(chain.len());
    for file in chain {
        let reader = FileReader::open(&file.path)?;
        if (reader.position, reader.base) != (file.position, file.base) {
            return Err(ProjectionError::Snapshot(format!(
                "{}: its header says position {} over {}, not what its name says; it is damaged",
                file.path.display(),
                reader.position,
                reader.base
            )));
        }
        readers.push(reader);
    }
    Ok(Some(readers))
}

/// Keeps the newest [`WHOLE_KEPT`] whole snapshots of `model` and the files after the oldest of
/// them; removes the rest, and the snapshots of the model's other layouts and earlier formats.
fn prune(dir: &Path, model: &str) -> Result<(), ProjectionError> {
    let files = list(dir, model)?;
    let wholes: Vec<u64> = files
        .iter()
        .filter(|f| f.is_whole())
        .map(|f| f.position)
        .collect();
    let keep_from = wholes
        .len()
        .checked_sub(WHOLE_KEPT)
        .map_or(0, |first| wholes[first]);
    for file in files.iter().filter(|file| file.position < keep_from) {
        std::fs::remove_file(&file.path).map_err(io(&file.path))?;
    }
    let current = format!("{model}.");
    let any_layout = format!(
        "{}.",
        model.split_once(".v").map_or(model, |(name, _)| name)
    );
    for entry in std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let snapshot = name.ends_with(".snap") || name.ends_with(".snapshot");
        if snapshot && name.starts_with(&any_layout) && !name.starts_with(&current) {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    Ok(())
}

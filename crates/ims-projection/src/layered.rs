//! A read model seen through a chain of snapshot files, with the changes of the events replayed
//! on top held in memory: what an audit as of a past position folds into, reading from disk only
//! the blocks its lookups and scans touch, so that its memory grows with the replayed events,
//! not with the model.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::snapshot::{FileReader, FileWriter, Row};
use crate::store::Entry;
use crate::ProjectionError;

#[derive(Debug)]
pub struct Layered {
    /// Changes since the newest file (`None`: removed).
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>,
    /// The chain, newest first: the first file that mentions a key has its row.
    files: Vec<FileReader>,
    /// Set for a model built from nothing in bounded memory: where its overlay goes when full.
    spill: Option<Spill>,
}

/// Where a [`Layered`] model spills its overlay, and when.
#[derive(Debug)]
struct Spill {
    dir: PathBuf,
    /// Rows held in memory before they are written to a file.
    overlay_max: usize,
    /// Files stacked before they are merged into one.
    files_max: usize,
    written: u64,
}

type Rows<'a> = Box<dyn Iterator<Item = Result<Row, ProjectionError>> + 'a>;

impl Layered {
    /// `files`: a chain as `snapshot::open_chain` gives it, newest first.
    pub fn new(files: Vec<FileReader>) -> Self {
        Self {
            overlay: HashMap::default(),
            files,
            spill: None,
        }
    }

    /// An empty model that keeps at most `overlay_max` changed rows in memory: past that it
    /// writes them, sorted, to a file in `dir` (a scratch folder it owns), and past `files_max`
    /// files it merges them into one, so memory stays bounded and reads stay few.
    pub fn spilling(dir: PathBuf, overlay_max: usize, files_max: usize) -> Self {
        Self {
            overlay: HashMap::default(),
            files: Vec::new(),
            spill: Some(Spill {
                dir,
                overlay_max,
                files_max,
                written: 0,
            }),
        }
    }

    /// Writes the overlay to a file when it is over its bound (see [`Layered::spilling`]).
    pub fn spill_if_full(&mut self) -> Result<(), ProjectionError> {
        match &self.spill {
            Some(spill) if self.overlay.len() > spill.overlay_max => self.spill(),
            _ => Ok(()),
        }
    }

    /// Writes the overlay to a file whatever its size. Nothing for a model that does not spill.
    fn spill(&mut self) -> Result<(), ProjectionError> {
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        if self.overlay.is_empty() {
            return Ok(());
        }
        spill.written += 1;
        let path = spill.dir.join(format!("spill.{:020}.snap", spill.written));
        let mut out = FileWriter::create(path.clone(), spill.written, spill.written - 1)?;
        let mut rows: Vec<Row> = self.overlay.drain().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in &rows {
            out.push(key, value.as_deref())?;
        }
        drop(rows);
        out.finish()?;
        self.files.insert(0, FileReader::open(&path)?);
        if self.files.len() > spill.files_max {
            self.merge_files()?;
        }
        Ok(())
    }

    /// Writes the overlay to a file and merges the files into one: for a model only read from
    /// now on, which then holds one file's blocks in memory rather than up to nine.
    pub fn settle(&mut self) -> Result<(), ProjectionError> {
        self.spill()?;
        // The map keeps its capacity after a spill, for the next rows; a settled model has none.
        self.overlay.shrink_to_fit();
        if self.files.len() > 1 {
            self.merge_files()?;
        }
        Ok(())
    }

    /// Merges every file into one whole file (removed rows dropped), the overlay being empty.
    fn merge_files(&mut self) -> Result<(), ProjectionError> {
        let spill = self.spill.as_mut().expect("only a spilling model merges");
        spill.written += 1;
        let path = spill.dir.join(format!("spill.{:020}.snap", spill.written));
        let mut out = FileWriter::create(path.clone(), spill.written, 0)?;
        for row in self.scan_from(b"", Vec::new()) {
            let (key, value) = row?;
            out.push(&key, Some(&value))?;
        }
        out.finish()?;
        for merged in std::mem::take(&mut self.files) {
            let merged_path = merged.path().to_owned();
            drop(merged);
            std::fs::remove_file(&merged_path).map_err(|e| {
                ProjectionError::Snapshot(format!("{}: {e}", merged_path.display()))
            })?;
        }
        self.files.push(FileReader::open(&path)?);
        Ok(())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        if let Some(row) = self.overlay.get(key) {
            return Ok(row.clone());
        }
        for file in &self.files {
            if let Some(row) = file.get(key)? {
                return Ok(row);
            }
        }
        Ok(None)
    }

    pub fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.overlay.insert(key, value);
    }

    /// Rows from `start` while they start with `prefix`, in key order: the files and the
    /// overlay merged, the newest row of each key winning, removed rows left out.
    pub fn scan_from<'a>(
        &'a self,
        prefix: &'a [u8],
        start: Vec<u8>,
    ) -> impl Iterator<Item = Result<Entry, ProjectionError>> + 'a {
        // References, sorted, each row copied only when it comes: a rebuild compares a whole
        // overlay of up to its bound (500,000 rows, about 100 MB) this way.
        let mut changed: Vec<(&'a Vec<u8>, &'a Option<Vec<u8>>)> = self
            .overlay
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.as_slice() >= start.as_slice())
            .collect();
        changed.sort_unstable_by_key(|(key, _)| *key);
        let mut sources: Vec<Rows<'a>> = vec![Box::new(
            changed
                .into_iter()
                .map(|(key, value)| Ok((key.clone(), value.clone()))),
        )];
        for file in &self.files {
            sources.push(Box::new(
                file.rows_from(&start)
                    .take_while(move |row| {
                        row.as_ref().map_or(true, |(k, _)| k.starts_with(prefix))
                    })
                    .fuse(),
            ));
        }
        Merge {
            heads: sources.iter().map(|_| None).collect(),
            sources,
        }
    }
}

/// Sorted sources merged by key; where several hold a key, the first source's row wins.
struct Merge<'a> {
    sources: Vec<Rows<'a>>,
    heads: Vec<Option<Row>>,
}

impl Iterator for Merge<'_> {
    type Item = Result<Entry, ProjectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            for (head, source) in self.heads.iter_mut().zip(&mut self.sources) {
                if head.is_none() {
                    match source.next() {
                        Some(Ok(row)) => *head = Some(row),
                        Some(Err(error)) => return Some(Err(error)),
                        None => {}
                    }
                }
            }
            let least = self
                .heads
                .iter()
                .flatten()
                .map(|(key, _)| key)
                .min()?
                .clone();
            let mut winner = None;
            for head in &mut self.heads {
                if head.as_ref().is_some_and(|(key, _)| *key == least) {
                    let (_, value) = head.take().expect("just matched");
                    winner.get_or_insert(value);
                }
            }
            if let Some(Some(value)) = winner {
                return Some(Ok((least, value)));
            }
        }
    }
}

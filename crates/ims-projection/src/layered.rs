//! A read model seen through a chain of snapshot files, with the changes of the events replayed
//! on top held in memory: what an audit as of a past position folds into, reading from disk only
//! the blocks its lookups and scans touch, so that its memory grows with the replayed events,
//! not with the model.

use std::collections::HashMap;

use crate::snapshot::{FileReader, Row};
use crate::store::Entry;
use crate::ProjectionError;

#[derive(Debug)]
pub struct Layered {
    /// Changes since the newest file (`None`: removed).
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>,
    /// The chain, newest first: the first file that mentions a key has its row.
    files: Vec<FileReader>,
}

type Rows<'a> = Box<dyn Iterator<Item = Result<Row, ProjectionError>> + 'a>;

impl Layered {
    /// `files`: a chain as `snapshot::open_chain` gives it, newest first.
    pub fn new(files: Vec<FileReader>) -> Self {
        Self {
            overlay: HashMap::default(),
            files,
        }
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
        let mut changed: Vec<Row> = self
            .overlay
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.as_slice() >= start.as_slice())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        changed.sort_unstable();
        let mut sources: Vec<Rows<'a>> = vec![Box::new(changed.into_iter().map(Ok))];
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

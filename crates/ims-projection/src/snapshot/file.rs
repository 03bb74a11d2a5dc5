//! One snapshot file: sorted rows in blocks, each block checked by its own SHA-256, and an index
//! of the blocks at the end, so that a reader seeks to the rows it needs instead of loading the
//! file.
//!
//! ```text
//! header  IMSSNAP2 | position u64 | base u64
//! blocks  rows: key length u32 | key | 1 | value length u32 | value   (a row that is there)
//!               key length u32 | key | 0                             (a row removed since base)
//! index   blocks u32, then per block: offset u64 | length u32 | SHA-256 | first key length u32 | first key
//! footer  index offset u64 | index length u64 | SHA-256 of header and index | IMSSNAP2
//! ```
//! Numbers are big-endian. `base` is 0 for a whole model, or the position of the snapshot whose
//! rows this one changes (a delta: only the rows changed after `base`, removals included).

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::ProjectionError;

const MAGIC: &[u8; 8] = b"IMSSNAP2";
const HEADER_BYTES: u64 = 8 + 8 + 8;
const FOOTER_BYTES: u64 = 8 + 8 + 32 + 8;
/// Rows are cut into blocks of about this many bytes: small enough that a lookup reads little,
/// large enough that the index stays a small fraction of the file.
const BLOCK_BYTES: usize = 32 * 1024;
/// How many decoded blocks a reader keeps (about 8 MiB of rows); past that it starts over.
const CACHED_BLOCKS: usize = 256;

/// A row of a snapshot: its value, or `None` when a delta records its removal.
pub type Row = (Vec<u8>, Option<Vec<u8>>);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProjectionError + '_ {
    move |error| ProjectionError::Snapshot(format!("{}: {error}", path.display()))
}

fn damaged(path: &Path, why: &str) -> ProjectionError {
    ProjectionError::Snapshot(format!("{}: {why}", path.display()))
}

struct BlockEntry {
    offset: u64,
    len: u32,
    digest: [u8; 32],
    first_key: Vec<u8>,
}

/// Writes rows given in strictly increasing key order, to a temporary name that
/// [`FileWriter::finish`] syncs and renames, so a crash leaves no half file under the real name.
pub(crate) struct FileWriter {
    path: PathBuf,
    temporary: PathBuf,
    out: BufWriter<std::fs::File>,
    written: u64,
    block: Vec<u8>,
    block_first_key: Option<Vec<u8>>,
    index: Vec<BlockEntry>,
    header: [u8; HEADER_BYTES as usize],
    last_key: Option<Vec<u8>>,
}

impl FileWriter {
    pub fn create(path: PathBuf, position: u64, base: u64) -> Result<Self, ProjectionError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot");
        let temporary = path.with_file_name(format!(".{name}.partial"));
        let file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
        let mut header = [0u8; HEADER_BYTES as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&position.to_be_bytes());
        header[16..].copy_from_slice(&base.to_be_bytes());
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(io(&temporary))?;
        Ok(Self {
            path,
            temporary,
            out,
            written: HEADER_BYTES,
            block: Vec::with_capacity(BLOCK_BYTES * 2),
            block_first_key: None,
            index: Vec::new(),
            header,
            last_key: None,
        })
    }

    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), ProjectionError> {
        assert!(
            self.last_key.as_deref().is_none_or(|last| last < key),
            "snapshot rows must come in increasing key order"
        );
        self.last_key = Some(key.to_vec());
        if self.block_first_key.is_none() {
            self.block_first_key = Some(key.to_vec());
        }
        put_bytes(&mut self.block, key);
        match value {
            Some(value) => {
                self.block.push(1);
                put_bytes(&mut self.block, value);
            }
            None => self.block.push(0),
        }
        if self.block.len() >= BLOCK_BYTES {
            self.end_block()?;
        }
        Ok(())
    }

    fn end_block(&mut self) -> Result<(), ProjectionError> {
        let Some(first_key) = self.block_first_key.take() else {
            return Ok(());
        };
        self.out
            .write_all(&self.block)
            .map_err(io(&self.temporary))?;
        self.index.push(BlockEntry {
            offset: self.written,
            len: u32::try_from(self.block.len()).expect("a block is far under 4 GiB"),
            digest: Sha256::digest(&self.block).into(),
            first_key,
        });
        self.written += self.block.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the index and footer, syncs, and renames the file to its real name.
    pub fn finish(mut self) -> Result<PathBuf, ProjectionError> {
        self.end_block()?;
        let mut index = Vec::new();
        index.extend_from_slice(
            &u32::try_from(self.index.len())
                .expect("blocks")
                .to_be_bytes(),
        );
        for block in &self.index {
            index.extend_from_slice(&block.offset.to_be_bytes());
            index.extend_from_slice(&block.len.to_be_bytes());
            index.extend_from_slice(&block.digest);
            put_bytes(&mut index, &block.first_key);
        }
        let digest = Sha256::new()
            .chain_update(self.header)
            .chain_update(&index)
            .finalize();
        let temporary = self.temporary;
        let mut footer = Vec::with_capacity(FOOTER_BYTES as usize);
        footer.extend_from_slice(&self.written.to_be_bytes());
        footer.extend_from_slice(&(index.len() as u64).to_be_bytes());
        footer.extend_from_slice(&digest);
        footer.extend_from_slice(MAGIC);
        self.out.write_all(&index).map_err(io(&temporary))?;
        self.out.write_all(&footer).map_err(io(&temporary))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io(&temporary)(e.into_error()))?;
        file.sync_all().map_err(io(&temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(io(&self.path))?;
        Ok(self.path)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("keys and values are far under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a length-prefixed part at `*at`, moving past it.
fn take_bytes<'b>(bytes: &'b [u8], at: &mut usize) -> Option<&'b [u8]> {
    let len = u32::from_be_bytes(bytes.get(*at..*at + 4)?.try_into().ok()?) as usize;
    let part = bytes.get(*at + 4..*at + 4 + len)?;
    *at += 4 + len;
    Some(part)
}

/// A decoded block: its bytes and where each row's key and value lie in them.
struct Block {
    bytes: Vec<u8>,
    rows: Vec<(std::ops::Range<usize>, Option<std::ops::Range<usize>>)>,
}

impl Block {
    fn parse(bytes: Vec<u8>) -> Option<Self> {
        let mut rows = Vec::new();
        let mut at = 0;
        let range = |part: &[u8], bytes: &[u8]| {
            let start = part.as_ptr() as usize - bytes.as_ptr() as usize;
            start..start + part.len()
        };
        while at < bytes.len() {
            let key = range(take_bytes(&bytes, &mut at)?, &bytes);
            let present = *bytes.get(at)?;
            at += 1;
            let value = match present {
                1 => Some(range(take_bytes(&bytes, &mut at)?, &bytes)),
                0 => None,
                _ => return None,
            };
            rows.push((key, value));
        }
        Some(Self { bytes, rows })
    }

    /// The first row whose key is at or after `key`.
    fn first_at_or_after(&self, key: &[u8]) -> usize {
        self.rows
            .partition_point(|(row_key, _)| &self.bytes[row_key.clone()] < key)
    }

    fn key(&self, row: usize) -> &[u8] {
        &self.bytes[self.rows[row].0.clone()]
    }

    fn row(&self, row: usize) -> Row {
        let (key, value) = &self.rows[row];
        (
            self.bytes[key.clone()].to_vec(),
            value.clone().map(|value| self.bytes[value].to_vec()),
        )
    }
}

/// An open snapshot file: its header and index in memory, its blocks read (and checked) when a
/// lookup needs them.
pub struct FileReader {
    path: PathBuf,
    file: std::fs::File,
    pub position: u64,
    pub base: u64,
    index: Vec<BlockEntry>,
    cache: Mutex<HashMap<usize, Arc<Block>>>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("path", &self.path)
            .field("position", &self.position)
            .field("base", &self.base)
            .field("blocks", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl FileReader {
    /// Opens a snapshot, checking its header and index against the footer's checksum.
    pub fn open(path: &Path) -> Result<Self, ProjectionError> {
        let file = std::fs::File::open(path).map_err(io(path))?;
        let size = file.metadata().map_err(io(path))?.len();
        if size < HEADER_BYTES + FOOTER_BYTES {
            return Err(damaged(path, "too short to be a snapshot"));
        }
        let read = |offset: u64, len: u64| -> Result<Vec<u8>, ProjectionError> {
            let mut bytes = vec![0u8; usize::try_from(len).expect("in memory")];
            file.read_exact_at(&mut bytes, offset).map_err(io(path))?;
            Ok(bytes)
        };
        let header = read(0, HEADER_BYTES)?;
        let footer = read(size - FOOTER_BYTES, FOOTER_BYTES)?;
        if &header[..8] != MAGIC || &footer[48..] != MAGIC {
            return Err(damaged(
                path,
                "its header or end is not a snapshot's of this release: cut short, damaged, or \
                 another file",
            ));
        }
        let u64_at =
            |bytes: &[u8], at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
        let (index_offset, index_len) = (u64_at(&footer, 0), u64_at(&footer, 8));
        if index_offset.checked_add(index_len) != Some(size - FOOTER_BYTES) {
            return Err(damaged(path, "its checksum does not match; it is damaged"));
        }
        let index_bytes = read(index_offset, index_len)?;
        let digest = Sha256::new()
            .chain_update(&header)
            .chain_update(&index_bytes)
            .finalize();
        if digest.as_slice() != &footer[16..48] {
            return Err(damaged(path, "its checksum does not match; it is damaged"));
        }
        let index = parse_index(&index_bytes)
            .ok_or_else(|| damaged(path, "its index is cut short; it is damaged"))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            position: u64_at(&header, 8),
            base: u64_at(&header, 16),
            index,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn block(&self, number: usize) -> Result<Arc<Block>, ProjectionError> {
        if let Some(block) = self.cache.lock().expect("block cache").get(&number) {
            return Ok(block.clone());
        }
        let entry = &self.index[number];
        let mut bytes = vec![0u8; entry.len as usize];
        self.file
            .read_exact_at(&mut bytes, entry.offset)
            .map_err(io(&self.path))?;
        if Sha256::digest(&bytes).as_slice() != entry.digest {
            return Err(damaged(
                &self.path,
                &format!("its checksum does not match at block {number}; it is damaged"),
            ));
        }
        let block = Arc::new(
            Block::parse(bytes)
                .ok_or_else(|| damaged(&self.path, &format!("block {number} is cut short")))?,
        );
        let mut cache = self.cache.lock().expect("block cache");
        if cache.len() >= CACHED_BLOCKS {
            cache.clear();
        }
        cache.insert(number, block.clone());
        Ok(block)
    }

    /// The block that would hold `key`: the last whose first key is at or before it.
    fn block_of(&self, key: &[u8]) -> Option<usize> {
        self.index
            .partition_point(|block| block.first_key.as_slice() <= key)
            .checked_sub(1)
    }

    /// The row of `key`: `None` if this file does not mention it, `Some(None)` if it records
    /// its removal.
    pub fn get(&self, key: &[u8]) -> Result<Option<Option<Vec<u8>>>, ProjectionError> {
        let Some(number) = self.block_of(key) else {
            return Ok(None);
        };
        let block = self.block(number)?;
        let row = block.first_at_or_after(key);
        Ok((row < block.rows.len() && block.key(row) == key).then(|| block.row(row).1))
    }

    /// Every row from `start` on, in key order, read block by block.
    pub fn rows_from(
        &self,
        start: &[u8],
    ) -> impl Iterator<Item = Result<Row, ProjectionError>> + '_ {
        let number = self.block_of(start).unwrap_or(0);
        RowsFrom {
            reader: self,
            start: start.to_vec(),
            number,
            block: None,
            row: 0,
        }
    }

    /// Every row, each block checked: what a whole-file check or a full load reads.
    pub fn rows(&self) -> impl Iterator<Item = Result<Row, ProjectionError>> + '_ {
        self.rows_from(b"")
    }
}

/// The rows of a [`FileReader`] from a key on.
struct RowsFrom<'r> {
    reader: &'r FileReader,
    start: Vec<u8>,
    number: usize,
    block: Option<Arc<Block>>,
    row: usize,
}

impl Iterator for RowsFrom<'_> {
    type Item = Result<Row, ProjectionError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.block.is_none() {
                if self.number >= self.reader.index.len() {
                    return None;
                }
                let block = match self.reader.block(self.number) {
                    Ok(block) => block,
                    Err(error) => {
                        self.number = self.reader.index.len();
                        return Some(Err(error));
                    }
                };
                self.row = block.first_at_or_after(&self.start);
                self.block = Some(block);
            }
            let block = self.block.as_ref().expect("a block is loaded");
            if self.row < block.rows.len() {
                self.row += 1;
                return Some(Ok(block.row(self.row - 1)));
            }
            self.block = None;
            self.number += 1;
        }
    }
}

fn parse_index(bytes: &[u8]) -> Option<Vec<BlockEntry>> {
    let count = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let mut at = 4;
    let mut index = Vec::with_capacity(count.min(bytes.len() / 48));
    for _ in 0..count {
        let offset = u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
        let len = u32::from_be_bytes(bytes.get(at + 8..at + 12)?.try_into().ok()?);
        let digest: [u8; 32] = bytes.get(at + 12..at + 44)?.try_into().ok()?;
        at += 44;
        let first_key = take_bytes(bytes, &mut at)?.to_vec();
        index.push(BlockEntry {
            offset,
            len,
            digest,
            first_key,
        });
    }
    (at == bytes.len()).then_some(index)
}

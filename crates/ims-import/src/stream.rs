//! The one streaming import path: bytes from a file, an upload, a download or a copy go
//! through a size cap, SHA-256 and SHA-512 (on threads of their own) and the format inspector
//! into a staging file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ims_inspect::{inspect, Regions, HEAD_BYTES, TAIL_BYTES};

use ims_fetch::web_download::{self, WebDownloadPolicy};

/// The largest image file imported (64 GiB): larger ones are refused, so a mistaken path (a
/// device, a huge log) cannot fill the store.
pub const IMPORT_BYTES_MAX: u64 = 64 << 30;

/// Bytes read at a time from the source.
const CHUNK_BYTES: usize = 1 << 20;

/// Chunks waiting for the SHA-512 thread: bounds the memory an import holds (a few MiB).
const HASH_QUEUE_CHUNKS: usize = 4;

/// What an import found, or why it failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    Built {
        size_bytes: u64,
        sha256: String,
        sha512: String,
        format: &'static str,
        virtual_size: Option<u64>,
    },
    Refused(String),
}

/// An import on its way into staging: every chunk is written, hashed and the regions the
/// inspector reads are kept. SHA-512 and SHA-256 run on threads of their own, a few chunks
/// behind: SHA-512 is the slowest stage by far (about 480 MB/s on one core), and with both
/// hashes off the writing thread it sets the pace alone. Blocking: run it off the async threads.
pub struct ImportStream {
    out: std::fs::File,
    hashers: [Hasher; 2],
    head: Vec<u8>,
    tail: Vec<u8>,
    size: u64,
}

/// A digest computed on a thread of its own from the chunks it is sent.
struct Hasher {
    chunks: std::sync::mpsc::SyncSender<Bytes>,
    digest: std::thread::JoinHandle<String>,
}

impl Hasher {
    fn spawn(algorithm: &'static ring::digest::Algorithm) -> Self {
        let (chunks, received) = std::sync::mpsc::sync_channel::<Bytes>(HASH_QUEUE_CHUNKS);
        let digest = std::thread::spawn(move || {
            let mut context = ring::digest::Context::new(algorithm);
            for chunk in received {
                context.update(&chunk);
            }
            hex::encode(context.finish())
        });
        Self { chunks, digest }
    }

    fn send(&self, chunk: Bytes) -> std::io::Result<()> {
        self.chunks
            .send(chunk)
            .map_err(|_| std::io::Error::other("a hashing thread stopped"))
    }

    fn finish(self) -> std::io::Result<String> {
        drop(self.chunks);
        self.digest
            .join()
            .map_err(|_| std::io::Error::other("a hashing thread panicked"))
    }
}

impl std::fmt::Debug for ImportStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportStream")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ImportStream {
    /// Starts an import into `staging` (created, or emptied when a crash left one).
    pub fn create(staging: &Path) -> std::io::Result<Self> {
        Ok(Self {
            out: std::fs::File::create(staging)?,
            hashers: [
                Hasher::spawn(&ring::digest::SHA256),
                Hasher::spawn(&ring::digest::SHA512),
            ],
            head: Vec::with_capacity(HEAD_BYTES),
            tail: Vec::with_capacity(2 * TAIL_BYTES),
            size: 0,
        })
    }

    /// Takes the next chunk; `Ok(Err(reason))` when the file passed the size cap.
    pub fn push(&mut self, chunk: Bytes) -> std::io::Result<Result<(), String>> {
        self.size += chunk.len() as u64;
        if self.size > IMPORT_BYTES_MAX {
            return Ok(Err(format!(
                "the file passed {IMPORT_BYTES_MAX} bytes, the most an image file may have"
            )));
        }
        for hasher in &self.hashers {
            hasher.send(chunk.clone())?;
        }
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(TAIL_BYTES)..]);
        let keep_from = self.tail.len().saturating_sub(TAIL_BYTES);
        self.tail.drain(..keep_from);
        self.out.write_all(&chunk)?;
        Ok(Ok(()))
    }

    /// Checks what arrived against `declared` and makes the staging file durable if it passes.
    pub fn finish(self, declared: &str) -> std::io::Result<Imported> {
        let [sha256, sha512] = self.hashers;
        let (sha256, sha512) = (sha256.finish()?, sha512.finish()?);
        if self.size == 0 {
            return Ok(Imported::Refused("the file is empty".into()));
        }
        let regions = Regions {
            head: &self.head,
            tail: &self.tail,
            file_size: self.size,
        };
        let inspection = match inspect(declared, &regions) {
            Ok(inspection) => inspection,
            Err(refusal) => return Ok(Imported::Refused(refusal.to_string())),
        };
        self.out.sync_all()?;
        Ok(Imported::Built {
            size_bytes: self.size,
            sha256,
            sha512,
            format: inspection.format.as_str(),
            virtual_size: inspection.virtual_size,
        })
    }
}

/// Streams `source` into `staging` through an [`ImportStream`]. Blocking.
pub fn import_file(source: &Path, declared: &str, staging: &Path) -> std::io::Result<Imported> {
    let mut file = std::fs::File::open(source)?;
    let length = file.metadata()?.len();
    if length > IMPORT_BYTES_MAX {
        return Ok(Imported::Refused(format!(
            "the file is {length} bytes; images of at most {IMPORT_BYTES_MAX} bytes are imported"
        )));
    }
    let mut stream = ImportStream::create(staging)?;
    loop {
        // A fresh buffer per chunk: the hashing threads still hold the previous ones.
        let mut buffer = Vec::with_capacity(CHUNK_BYTES);
        let read = (&mut file)
            .take(CHUNK_BYTES as u64)
            .read_to_end(&mut buffer)?;
        if read == 0 {
            break;
        }
        if let Err(reason) = stream.push(Bytes::from(buffer))? {
            return Ok(Imported::Refused(reason));
        }
    }
    stream.finish(declared)
}

/// Streams `chunks` (an upload, a download, another store's object) into `staging` through an
/// [`ImportStream`] on a blocking thread, a bounded channel between them holding the source
/// back while the disk and the hashes catch up. `Ok(Err(why))` when the source broke off: that
/// says nothing about the file, and the caller decides whether to try again.
pub async fn import_stream<S, E>(
    chunks: S,
    declared: &str,
    staging: &Path,
) -> std::io::Result<Result<Imported, String>>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    use futures::StreamExt as _;
    let (sender, mut received) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE_CHUNKS);
    let (declared, staging) = (declared.to_owned(), staging.to_owned());
    let importing = tokio::task::spawn_blocking(move || {
        let mut stream = ImportStream::create(&staging)?;
        while let Some(chunk) = received.blocking_recv() {
            if let Err(reason) = stream.push(chunk)? {
                return Ok(Imported::Refused(reason));
            }
        }
        stream.finish(&declared)
    });
    let feeding = async move {
        futures::pin_mut!(chunks);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if sender.send(chunk).await.is_err() {
                break; // refused already
            }
        }
        Ok::<(), String>(())
    };
    let (imported, fed) = tokio::join!(importing, feeding);
    let imported = imported.map_err(|_| std::io::Error::other("the import thread panicked"))??;
    Ok(fed.map(|()| imported))
}

/// Downloads `url` under `policy` into `staging` and checks it against `declared`.
pub async fn import_download(
    policy: &WebDownloadPolicy,
    url: &str,
    declared: &str,
    staging: &Path,
) -> std::io::Result<Imported> {
    let download = match policy.open(url).await {
        Ok(download) => download,
        Err(reason) => return Ok(Imported::Refused(reason)),
    };
    if let Some(length) = download.length.filter(|&length| length > IMPORT_BYTES_MAX) {
        return Ok(Imported::Refused(format!(
            "{url} announces {length} bytes; images of at most {IMPORT_BYTES_MAX} bytes are imported"
        )));
    }
    let body = futures::stream::unfold(Some(download.body), |body| async move {
        let mut body = body?;
        match web_download::next_chunk(&mut body).await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
            Ok(None) => None,
            Err(error) => Some((Err(error), None)),
        }
    });
    Ok(import_stream(body, declared, staging)
        .await?
        .unwrap_or_else(Imported::Refused))
}

/// The path a `file://` URL names, if it lies under `root` (both resolved, links included).
pub fn path_under_root(url: &str, root: Option<&Path>) -> Result<PathBuf, String> {
    let path = url
        .strip_prefix("file://")
        .ok_or_else(|| format!("{url:?} is not a file:// URL"))?;
    let root = root.ok_or_else(|| {
        "this service imports file:// sources only under its --import-root, which is not set"
            .to_owned()
    })?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("the import root {} cannot be read: {e}", root.display()))?;
    let resolved = Path::new(path)
        .canonicalize()
        .map_err(|e| format!("{path} cannot be read: {e}"))?;
    if !resolved.starts_with(&root) {
        return Err(format!(
            "{path} is outside the import root {}; only files under it are imported",
            root.display()
        ));
    }
    if !resolved.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_cap_is_refused_before_a_byte_is_staged() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("huge.raw");
        // Sparse: a 64 GiB + 1 byte file that costs nothing on disk.
        std::fs::File::create(&source)
            .unwrap()
            .set_len(IMPORT_BYTES_MAX + 1)
            .unwrap();
        let staging = dir.path().join("staging");
        let imported = import_file(&source, "raw", &staging).unwrap();
        let Imported::Refused(reason) = imported else {
            panic!("a file over the cap was imported: {imported:?}")
        };
        assert!(reason.contains(&IMPORT_BYTES_MAX.to_string()), "{reason}");
        assert!(!staging.exists(), "a refused file was staged");
    }
}

//! The import worker of a region (DESIGN.md section 14): takes each image created from a
//! `file://` (under the import root) or `http(s)://` source (under the web-download rules) in
//! the log, exactly once and resumably, streams the bytes through a size cap, SHA-256, SHA-512
//! and the format inspector into staging, moves it into the store, and reports the build:
//! succeeded with what it found, or failed with a reason the owner sees.
//!
//! Exactly once: it follows the log from a checkpoint of its own (a tiny sled database), and
//! its `report-build` carries a command id derived from the image's creation event, so a
//! repeat after a crash is answered from the command index and recorded once. A crash
//! mid-import leaves a staging file that the repeat overwrites; a refused file is discarded.
//! Sources of other schemes are left to an external builder. Imports run one at a time.
//! It also removes the object of every image deleted in the log.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use ims_domain::{Event, ImageId, RegionId, Source};
use ims_inspect::{inspect, Regions, HEAD_BYTES, TAIL_BYTES};
use ims_log::decode_event;
use ims_wire::commands::{command_payload, BuildOutcomeDto, CommandBody, ReportBuildRequest};
use ims_wire::Subjects;
use serde_json::Value;

use ims_bus::{derived_command_id, LogSource};
use ims_fetch::web_download::{self, WebDownloadPolicy};
use ims_store::ImageStore;

/// The largest image file imported (64 GiB): larger ones are refused, so a mistaken path (a
/// device, a huge log) cannot fill the store.
pub const IMPORT_BYTES_MAX: u64 = 64 << 30;

/// Bytes read at a time from the source.
const CHUNK_BYTES: usize = 1 << 20;

/// Chunks waiting for the SHA-512 thread: bounds the memory an import holds (a few MiB).
const HASH_QUEUE_CHUNKS: usize = 4;

/// How often an idle worker looks for new images.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long a request to the service may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// The command id of the report of the import asked for by event `event_id`.
pub fn report_command_id(event_id: [u8; 16]) -> uuid::Uuid {
    derived_command_id("ims import report-build", &event_id)
}

/// The command id of the report of the upload of image `id` (one upload makes one report).
pub fn upload_command_id(id: &ImageId) -> uuid::Uuid {
    derived_command_id("ims upload report-build", id.as_bytes())
}

/// The `report-build` command that tells what an import found.
pub fn report_payload(id: &ImageId, outcome: &Imported, command_id: uuid::Uuid) -> Vec<u8> {
    let body = match outcome {
        Imported::Built {
            size_bytes,
            sha256,
            sha512,
            format,
            virtual_size,
        } => ReportBuildRequest {
            image_id: id.to_string(),
            outcome: BuildOutcomeDto::Succeeded,
            size_bytes: Some(*size_bytes),
            checksum_sha256: Some(sha256.clone()),
            os_hash_algo: Some("sha512".to_owned()),
            os_hash_value: Some(sha512.clone()),
            detected_format: Some((*format).to_owned()),
            virtual_size: *virtual_size,
            reason: None,
        },
        Imported::Refused(reason) => ReportBuildRequest {
            image_id: id.to_string(),
            outcome: BuildOutcomeDto::Failed,
            size_bytes: None,
            checksum_sha256: None,
            os_hash_algo: None,
            os_hash_value: None,
            detected_format: None,
            virtual_size: None,
            reason: Some(reason.clone()),
        },
    };
    command_payload(&body, Some(command_id), None)
}

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

/// Where imports may come from: files under the operator's import root, and the web under
/// the web-download rules.
#[derive(Clone, Debug, Default)]
pub struct ImportSources {
    /// `--import-root`; none: `file://` sources fail.
    pub root: Option<PathBuf>,
    pub web: WebDownloadPolicy,
}

impl ImportSources {
    /// Whether the worker imports a source of this URL (others are left to an external
    /// builder's `report-build`).
    pub fn takes(url: &str) -> bool {
        ["file://", "http://", "https://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
    }

    /// Imports `url` into `staging`; a source that cannot be read is refused with the reason.
    async fn import(
        &self,
        url: &str,
        declared: &str,
        staging: PathBuf,
    ) -> Result<Imported, ImportError> {
        let read = if url.starts_with("file://") {
            match path_under_root(url, self.root.as_deref()) {
                Err(reason) => return Ok(Imported::Refused(reason)),
                Ok(path) => {
                    let declared = declared.to_owned();
                    tokio::task::spawn_blocking(move || import_file(&path, &declared, &staging))
                        .await?
                }
            }
        } else {
            import_download(&self.web, url, declared, &staging).await
        };
        Ok(read.unwrap_or_else(|error| {
            Imported::Refused(format!("reading the source failed: {error}"))
        }))
    }
}

/// Why the import worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the import worker's checkpoint: {0}")]
    State(#[from] sled::Error),
    #[error(transparent)]
    Log(#[from] ims_log::LogError),
    #[error("the image store: {0}")]
    Store(#[from] object_store::Error),
    #[error("an import task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the answer to an import report: {0}")]
    Reply(#[from] serde_json::Error),
    #[error(
        "the import worker of region {region} is at position {checkpoint}, beyond the log's head \
         {head}: its state belongs to another or a newer log; move its import folder away"
    )]
    BeyondHead {
        region: RegionId,
        checkpoint: u64,
        head: u64,
    },
}

/// The import worker of one region.
#[derive(Debug)]
pub struct ImportWorker {
    client: async_nats::Client,
    subjects: Subjects,
    region: RegionId,
    /// The region's log, read through `log.read` like every other reader.
    log: LogSource,
    store: ImageStore,
    sources: ImportSources,
    db: sled::Db,
    checkpoint: u64,
}

impl ImportWorker {
    /// Opens the worker's checkpoint under `dir`.
    pub fn open(
        client: async_nats::Client,
        subjects: Subjects,
        region: RegionId,
        store: ImageStore,
        sources: ImportSources,
        dir: &Path,
    ) -> Result<Self, ImportError> {
        let db = ims_log::open_sled(sled::Config::new().path(dir))?;
        let checkpoint = db.get(CHECKPOINT_KEY)?.map_or(0, |value| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&value[..8]);
            u64::from_be_bytes(bytes)
        });
        Ok(Self {
            log: LogSource::online(client.clone(), &subjects, &region),
            client,
            subjects,
            region,
            store,
            sources,
            db,
            checkpoint,
        })
    }

    fn advance(&mut self, position: u64) -> Result<(), ImportError> {
        self.checkpoint = position;
        self.db
            .insert(CHECKPOINT_KEY, &position.to_be_bytes()[..])?;
        self.db.flush()?;
        Ok(())
    }

    /// Imports what the log holds past the checkpoint; `Ok(false)` when the service cannot be
    /// reached yet (retried on the next poll).
    async fn step(&mut self) -> Result<bool, ImportError> {
        let Ok(batch) = self.log.batch(self.checkpoint + 1, 1000).await else {
            return Ok(false);
        };
        if batch.head < self.checkpoint {
            return Err(ImportError::BeyondHead {
                region: self.region.clone(),
                checkpoint: self.checkpoint,
                head: batch.head,
            });
        }
        for envelope in &batch.envelopes {
            if envelope.body.event_type == "image_deleted" {
                if let Event::ImageDeleted { image_id, .. } = decode_event(envelope)? {
                    self.store.remove(&image_id).await?;
                }
            }
            if envelope.body.event_type == "image_created" {
                if let Event::ImageCreated(new) = decode_event(envelope)? {
                    if let Source::File { url, format } = &new.source {
                        if ImportSources::takes(url)
                            && !self
                                .import(new.id, url, format.as_str(), envelope.body.event_id)
                                .await?
                        {
                            return Ok(false);
                        }
                    }
                }
            }
            self.advance(envelope.position())?;
        }
        Ok(true)
    }

    /// Imports one image and reports it; `Ok(false)` when the report could not be delivered.
    async fn import(
        &self,
        id: ImageId,
        url: &str,
        declared: &str,
        event_id: [u8; 16],
    ) -> Result<bool, ImportError> {
        let outcome = self
            .sources
            .import(url, declared, self.store.staging_path(&id))
            .await?;
        match &outcome {
            Imported::Built { .. } => self.store.commit(&id).await?,
            Imported::Refused(reason) => {
                self.store.discard(&id);
                tracing::info!(region = %self.region, %id, reason, "import refused");
            }
        }
        let payload = report_payload(&id, &outcome, report_command_id(event_id));
        let subject = self
            .subjects
            .operator_command(&self.region, ReportBuildRequest::NAME);
        let sent = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client.request(subject, Bytes::from(payload)),
        )
        .await;
        let Ok(Ok(message)) = sent else {
            return Ok(false);
        };
        let reply: Value = serde_json::from_slice(&message.payload)?;
        match reply["error"]["code"].as_str() {
            // Done, or the image moved on (deleted, built by someone else): nothing to import.
            None | Some("invalid_state" | "not_found") => Ok(true),
            Some("unavailable") => Ok(false),
            Some(other) => {
                tracing::warn!(region = %self.region, %id, code = other, %reply, "the import report was refused");
                Ok(true)
            }
        }
    }
}

/// Runs the import worker until `stop` completes.
pub async fn run_import_worker(
    mut worker: ImportWorker,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ImportError> {
    tokio::pin!(stop);
    loop {
        worker.step().await?;
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
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

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

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use ims_domain::{Event, ImageId, RegionId, Source};
use ims_log::decode_event;
use ims_wire::commands::{command_payload, BuildOutcomeDto, CommandBody, ReportBuildRequest};
use ims_wire::Subjects;
use serde_json::Value;

use ims_bus::{derived_command_id, LogSource};
use ims_fetch::web_download::WebDownloadPolicy;
use ims_store::ImageStore;

mod stream;

pub use stream::*;

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
    /// The last position handled; `saved` is the last one written to `db`.
    checkpoint: u64,
    saved: u64,
    /// The region's log when this process holds it: an import whose report it already records
    /// is not done again (a new leader's worker starts from its own checkpoint).
    local_log: Option<ims_log::EventLog>,
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
            saved: checkpoint,
            local_log: None,
        })
    }

    /// Skips the images whose report `log` (the region's log, held by this process) already
    /// records, rather than importing them again.
    pub fn with_local_log(mut self, log: ims_log::EventLog) -> Self {
        self.local_log = Some(log);
        self
    }

    /// Whether the report of the import asked for by event `event_id` is in the local log.
    fn reported(&self, event_id: [u8; 16]) -> Result<bool, ImportError> {
        let Some(log) = &self.local_log else {
            return Ok(false);
        };
        let id = report_command_id(event_id);
        Ok(log
            .command(&ims_domain::Actor::Operator.to_string(), &id)?
            .is_some())
    }

    /// Writes the checkpoint, when it moved, durably. Done after each import and once per batch
    /// read, not per event: a flush per event cost an fsync on the async runtime for every
    /// event of the log, and held sled's process-wide lock through it, so the region's writer
    /// waited for it (95% of its `sched_yield`s in `ims-bench`). A crash redoes at most the
    /// events since, which are skipped (no file to import) or checked against the log's record
    /// of their report.
    fn save_checkpoint(&mut self) -> Result<(), ImportError> {
        if self.checkpoint > self.saved {
            self.db
                .insert(CHECKPOINT_KEY, &self.checkpoint.to_be_bytes()[..])?;
            self.db.flush()?;
            self.saved = self.checkpoint;
        }
        Ok(())
    }

    /// Imports what the log holds past the checkpoint; `Ok(false)` when the service cannot be
    /// reached yet (retried on the next poll).
    async fn step(&mut self) -> Result<bool, ImportError> {
        let followed = self.follow_log().await;
        self.save_checkpoint()?;
        followed
    }

    async fn follow_log(&mut self) -> Result<bool, ImportError> {
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
                        if ImportSources::takes(url) && !self.reported(envelope.body.event_id)? {
                            if !self
                                .import(new.id, url, format.as_str(), envelope.body.event_id)
                                .await?
                            {
                                return Ok(false);
                            }
                            self.checkpoint = envelope.position();
                            self.save_checkpoint()?;
                        }
                    }
                }
            }
            self.checkpoint = envelope.position();
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
        // A stop does not wait for a step's requests to time out (NATS down, no writer): a
        // step cut short is one a crash would cut short, redone from the checkpoint at start.
        tokio::select! {
            _ = &mut stop => return Ok(()),
            stepped = worker.step() => stepped?,
        };
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

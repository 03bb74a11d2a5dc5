//! The copy saga of a region (rule 9): for every `copy_requested` event in the region's log it
//! creates the copy in the target region (`receive-copy`) and records the outcome back in the
//! source region (`record-copy-outcome`).
//!
//! It is driven by the log, not by memory: it reads the log through `log.read` from its own
//! checkpoint (a tiny sled database), and both commands carry command ids derived from the source
//! event's id, so a redelivery, a crash between the two steps or a restart can never create two
//! copies or record an outcome twice: the target and the source answer a repeat with the first
//! reply. A failure (target tenant not registered, quota, source deleted meanwhile, target
//! region silent for too long) is recorded as an outcome the owner sees, never dropped.
//!
//! Once the saga has asked the target for a copy it finishes that request, even if the source is
//! deleted before the outcome is recorded: the target may already hold the copy, and asking again
//! (same command id) is the only way to learn it. So the saga notes durably that it asked before
//! it asks, and a retry after a crash asks again rather than reporting a failure while a copy
//! exists.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ims_domain::{CopySpec, Event, ImageId, RegionId};
use ims_log::{decode_event, LogBatch};
use ims_wire::commands::{
    command_payload, CommandBody, DiskDto, OsDto, ReceiveCopyRequest, RecordCopyOutcomeRequest,
    ReportBuildRequest,
};
use ims_wire::{CommandReply, Subjects};
use ims_wire::{Query, QueryParams};

use ims_bus::{derived_command_id, LogSource};
use ims_import::{import_stream, report_payload, Imported};
use ims_store::{ImageStore, StoreLocation};

/// How often an idle saga looks for new copy requests.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long a target region may stay silent before the copy is recorded as failed.
pub const TARGET_SILENCE_MAX: Duration = Duration::from_secs(30);

/// How long one request to a region may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

const CHECKPOINT_KEY: &[u8] = b"p";

/// Marks a copy request the target was asked for: `a` + the source event's id.
const ASKED: u8 = b'a';

/// Test hook: milliseconds the saga waits after the target made a copy and before it records the
/// outcome, so that a test can stop the process inside that window. Unset in production.
pub const PAUSE_AFTER_RECEIVE_ENV: &str = "IMS_TEST_COPY_SAGA_PAUSE_AFTER_RECEIVE_MS";

/// The command id of the outcome of the copy asked for by event `event_id`: a name-based UUID
/// (version 8) from a SHA-256 of the event id, different from the event id the target gets.
pub fn outcome_command_id(event_id: [u8; 16]) -> uuid::Uuid {
    derived_command_id("ims record-copy-outcome", &event_id)
}

/// The command id of the build report of a copy whose bytes the saga moved.
fn bytes_command_id(event_id: [u8; 16]) -> uuid::Uuid {
    derived_command_id("ims copy bytes report-build", &event_id)
}

/// One `copy_requested` event of the log: the copy it asks for, and the event's id and position,
/// from which the saga's command ids, notes and freshness checks derive.
#[derive(Debug)]
struct CopyRequest {
    event_id: [u8; 16],
    position: u64,
    image_id: ImageId,
    copy_image_id: ImageId,
    target: RegionId,
    spec: CopySpec,
}

/// Why a step must be tried again later.
#[derive(Debug)]
struct Retry(String);

/// Sends a command and returns its reply; no responder or a timeout is a `Retry`.
async fn send(
    client: &async_nats::Client,
    subject: String,
    payload: Vec<u8>,
) -> Result<CommandReply, Retry> {
    let payload = Bytes::from(payload);
    match tokio::time::timeout(REQUEST_TIMEOUT, client.request(subject.clone(), payload)).await {
        Err(_) => Err(Retry(format!(
            "{subject} did not answer within {REQUEST_TIMEOUT:?}"
        ))),
        Ok(Err(error)) => Err(Retry(format!("{subject}: {error}"))),
        Ok(Ok(message)) => serde_json::from_slice(&message.payload)
            .map_err(|e| Retry(format!("{subject} answered garbage: {e}"))),
    }
}

/// The `image` query for the source image of `request`, as of the request.
fn image_query(request: &CopyRequest) -> Bytes {
    let params = QueryParams {
        image_id: Some(request.image_id.to_string()),
        min_position: Some(request.position),
        ..QueryParams::default()
    };
    Bytes::from(serde_json::to_vec(&params).expect("query parameters serialise"))
}

/// Why the copy saga stopped.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error("the copy saga's state: {0}")]
    State(#[from] sled::Error),
    #[error(transparent)]
    Log(#[from] ims_log::LogError),
    #[error(
        "the copy saga of region {region} is at position {checkpoint}, beyond the log's head \
         {head}: its state belongs to another or a newer log; move its copy-saga folder away to \
         start over"
    )]
    BeyondHead {
        region: RegionId,
        checkpoint: u64,
        head: u64,
    },
}

/// The saga of one source region.
#[derive(Debug)]
pub struct CopySaga {
    client: async_nats::Client,
    subjects: Subjects,
    region: RegionId,
    /// The region's log, read like every other reader reads it.
    log: LogSource,
    db: sled::Db,
    checkpoint: u64,
    /// When the current copy's target was first found silent.
    silent_since: Option<Instant>,
    /// The image stores of the regions in this process: a copy between two of them moves the
    /// bytes too.
    stores: Arc<HashMap<RegionId, ImageStore>>,
    /// The deployment's store and this process's data dir: a shared store (S3) reaches the
    /// target region's objects even when another process serves it.
    shared: Option<(StoreLocation, std::path::PathBuf)>,
    /// The region's log when this process holds it: a copy whose outcome it already records is
    /// not asked for again (a new leader's saga starts from its own checkpoint).
    local_log: Option<ims_log::EventLog>,
}

impl CopySaga {
    pub fn open(
        client: async_nats::Client,
        subjects: Subjects,
        region: RegionId,
        dir: &Path,
    ) -> Result<Self, SagaError> {
        let db = ims_log::open_sled(sled::Config::new().path(dir))?;
        let checkpoint = db.get(CHECKPOINT_KEY)?.map_or(0, |v| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&v[..8]);
            u64::from_be_bytes(bytes)
        });
        Ok(Self {
            log: LogSource::online(client.clone(), &subjects, &region)
                .with_timeout(REQUEST_TIMEOUT),
            client,
            subjects,
            region,
            db,
            checkpoint,
            silent_since: None,
            stores: Arc::default(),
            shared: None,
            local_log: None,
        })
    }

    /// Skips the copies whose outcome `log` (the region's log, held by this process) already
    /// records, rather than copying them again.
    pub fn with_local_log(mut self, log: ims_log::EventLog) -> Self {
        self.local_log = Some(log);
        self
    }

    /// Whether the outcome of the copy asked for by event `event_id` is in the local log.
    fn recorded(&self, event_id: [u8; 16]) -> Result<bool, SagaError> {
        let Some(log) = &self.local_log else {
            return Ok(false);
        };
        let id = outcome_command_id(event_id);
        Ok(log
            .command(&ims_domain::Actor::Operator.to_string(), &id)?
            .is_some())
    }

    /// Moves image files along with copies between the regions whose stores are given, and to
    /// any region when `location` is shared by the whole deployment (S3; staging under
    /// `data_dir`).
    pub fn with_stores(
        mut self,
        stores: Arc<HashMap<RegionId, ImageStore>>,
        location: &StoreLocation,
        data_dir: &Path,
    ) -> Self {
        self.stores = stores;
        if matches!(location, StoreLocation::S3 { .. }) {
            self.shared = Some((location.clone(), data_dir.to_owned()));
        }
        self
    }

    /// The store of `region`: this process's, or the shared one's part for it.
    fn store_of(&self, region: &RegionId) -> Result<Option<ImageStore>, Retry> {
        if let Some(store) = self.stores.get(region) {
            return Ok(Some(store.clone()));
        }
        let Some((location, data_dir)) = &self.shared else {
            return Ok(None);
        };
        ImageStore::open(location, data_dir, region)
            .map(Some)
            .map_err(|e| Retry(format!("opening the image store of region {region}: {e}")))
    }

    /// Streams the source image's file into the target region's store, hashing it again and
    /// comparing with the SHA-256 the source recorded, then reports the copy's build in the
    /// target region (failed, with why, when the bytes differ). Nothing to do when the source
    /// has no file, or the target's store is neither in this process nor shared (an external
    /// builder reports then).
    async fn move_bytes(&self, request: &CopyRequest) -> Result<(), Retry> {
        let retry = |what: &str, error: &dyn std::fmt::Display| Retry(format!("{what}: {error}"));
        let (Some(source), Some(target)) = (
            self.stores.get(&self.region),
            self.store_of(&request.target)?,
        ) else {
            return Ok(());
        };
        if source
            .size(&request.image_id)
            .await
            .map_err(|e| retry("reading the source's file", &e))?
            .is_none()
        {
            return Ok(());
        }
        // What the source recorded of its file, as of the copy request.
        let subject = self
            .subjects
            .query(&self.region, &request.spec.owner, Query::Image.as_str());
        let message = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client.request(subject, image_query(request)),
        )
        .await
        .map_err(|_| Retry("the source's record did not come".into()))?
        .map_err(|e| retry("asking for the source's record", &e))?;
        let view: serde_json::Value = serde_json::from_slice(&message.payload)
            .map_err(|e| retry("the source's record", &e))?;
        let (Some(recorded), Some(format)) = (
            view["checksum_sha256"].as_str().map(str::to_owned),
            view["detected_format"].as_str().map(str::to_owned),
        ) else {
            return Ok(());
        };
        let from = source
            .get(&request.image_id, None)
            .await
            .map_err(|e| retry("reading the source's file", &e))?;
        let moved = import_stream(
            from.into_stream(),
            &format,
            &target.staging_path(&request.copy_image_id),
        )
        .await
        .map_err(|e| retry("copying the file", &e))?
        .map_err(|e| Retry(format!("copying the file broke off: {e}")))?;
        let outcome = match moved {
            Imported::Built { ref sha256, .. } if *sha256 != recorded => Imported::Refused(
                format!("the copied bytes hash to SHA-256 {sha256}, not the source's {recorded}"),
            ),
            other => other,
        };
        match &outcome {
            Imported::Built { .. } => target
                .commit(&request.copy_image_id)
                .await
                .map_err(|e| retry("storing the copy's file", &e))?,
            Imported::Refused(_) => target.discard(&request.copy_image_id),
        }
        let payload = report_payload(
            &request.copy_image_id,
            &outcome,
            bytes_command_id(request.event_id),
        );
        let reply = send(
            &self.client,
            self.subjects
                .operator_command(&request.target, ReportBuildRequest::NAME),
            payload,
        )
        .await?;
        match reply.error {
            Some(error) if error.code == ims_wire::WireErrorCode::Unavailable => {
                Err(Retry(error.to_string()))
            }
            _ => Ok(()),
        }
    }

    fn asked_key(request: &CopyRequest) -> [u8; 17] {
        let mut key = [ASKED; 17];
        key[1..].copy_from_slice(&request.event_id);
        key
    }

    /// Whether the target was asked for `request`'s copy before (by an earlier try).
    fn was_asked(&self, request: &CopyRequest) -> Result<bool, Retry> {
        self.db
            .contains_key(Self::asked_key(request))
            .map_err(|e| Retry(format!("reading the copy saga's state: {e}")))
    }

    /// Notes, durably, that the target is about to be asked for `request`'s copy.
    fn note_asked(&self, request: &CopyRequest) -> Result<(), Retry> {
        self.db
            .insert(Self::asked_key(request), &[][..])
            .and_then(|_| self.db.flush())
            .map(|_| ())
            .map_err(|e| Retry(format!("writing the copy saga's state: {e}")))
    }

    /// Moves the checkpoint to `position`, when it moved. Written before each copy and once per
    /// batch read, not per event (a sled write per event of the log, on the async runtime):
    /// after a crash the saga reads again the events since, and asks again at most the copies
    /// among them, whose command ids make a second ask a no-op.
    fn save_checkpoint(&mut self, position: u64) -> Result<(), SagaError> {
        if position > self.checkpoint {
            self.checkpoint = position;
            self.db
                .insert(CHECKPOINT_KEY, &position.to_be_bytes()[..])?;
        }
        Ok(())
    }

    async fn read_log(&self) -> Result<LogBatch, Retry> {
        self.log
            .batch(self.checkpoint + 1, 1000)
            .await
            .map_err(|e| Retry(format!("{e:#}")))
    }

    /// Processes what the log holds past the checkpoint; stops at the first step to retry.
    async fn step(&mut self) -> Result<(), SagaError> {
        let batch = match self.read_log().await {
            Ok(batch) => batch,
            Err(Retry(why)) => {
                tracing::debug!(region = %self.region, why, "copy saga cannot read the log yet");
                return Ok(());
            }
        };
        // No silent rollback: a checkpoint past the head means this saga's state belongs to
        // another or a newer log, and acting on it could skip or repeat copies.
        if batch.head < self.checkpoint {
            return Err(SagaError::BeyondHead {
                region: self.region.clone(),
                checkpoint: self.checkpoint,
                head: batch.head,
            });
        }
        let mut done = self.checkpoint;
        for envelope in &batch.envelopes {
            if envelope.body.event_type == "copy_requested"
                && !self.recorded(envelope.body.event_id)?
            {
                self.save_checkpoint(done)?;
                if let Event::CopyRequested {
                    image_id,
                    copy_image_id,
                    target_region,
                    copy,
                    ..
                } = decode_event(envelope)?
                {
                    let request = CopyRequest {
                        event_id: envelope.body.event_id,
                        position: envelope.position(),
                        image_id,
                        copy_image_id,
                        target: target_region,
                        spec: *copy,
                    };
                    if let Err(Retry(why)) = self.copy(&request).await {
                        tracing::info!(region = %self.region, %copy_image_id, why, "copy step will be retried");
                        return Ok(());
                    }
                }
            }
            done = envelope.position();
        }
        self.save_checkpoint(done)
    }

    async fn copy(&mut self, request: &CopyRequest) -> Result<(), Retry> {
        let CopyRequest {
            event_id,
            image_id,
            copy_image_id,
            ..
        } = request;
        let outcome = if !self.was_asked(request)? && self.source_deleted(request).await {
            Err(format!(
                "source image {image_id} was deleted before the copy was made"
            ))
        } else {
            self.note_asked(request)?;
            let created = self.create_in_target(request).await?;
            if created.is_ok() {
                self.move_bytes(request).await?;
            }
            if let Some(pause) = std::env::var(PAUSE_AFTER_RECEIVE_ENV)
                .ok()
                .and_then(|ms| ms.parse().ok())
            {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            created
        };
        let (outcome, reason) = match outcome {
            Ok(()) => ("delivered", String::new()),
            Err(reason) => ("failed", reason),
        };
        let body = RecordCopyOutcomeRequest {
            image_id: image_id.to_string(),
            copy_image_id: copy_image_id.to_string(),
            outcome: outcome.to_owned(),
            reason,
        };
        let payload = command_payload(&body, Some(outcome_command_id(*event_id)), None);
        let reply = send(
            &self.client,
            self.subjects
                .operator_command(&self.region, RecordCopyOutcomeRequest::NAME),
            payload,
        )
        .await?;
        if let Some(error) = reply.error.filter(|_| !reply.ok) {
            if error.code == ims_wire::WireErrorCode::Unavailable {
                return Err(Retry(error.to_string()));
            }
            tracing::error!(region = %self.region, %copy_image_id, %error, "the source region refused the copy outcome");
        }
        // The outcome is recorded: a later repeat of this step gets the same reply from the
        // source region whatever it decides, so the note is no longer needed.
        self.db
            .remove(Self::asked_key(request))
            .map_err(|e| Retry(format!("writing the copy saga's state: {e}")))?;
        self.silent_since = None;
        Ok(())
    }

    /// Whether the source was deleted since the request: asked of the region's read models when
    /// they answer; without them the copy goes ahead (the outcome is recorded either way).
    async fn source_deleted(&self, request: &CopyRequest) -> bool {
        let subject = self
            .subjects
            .query(&self.region, &request.spec.owner, Query::Image.as_str());
        match send(&self.client, subject, image_query(request).into()).await {
            Ok(reply) => reply
                .error
                .is_some_and(|e| e.code == ims_wire::WireErrorCode::NotFound),
            Err(_) => false,
        }
    }

    /// Creates the copy in the target region: `Ok(Ok)` created (now or by an earlier try),
    /// `Ok(Err(reason))` refused for good, `Err` to retry.
    async fn create_in_target(
        &mut self,
        request: &CopyRequest,
    ) -> Result<Result<(), String>, Retry> {
        let CopyRequest {
            image_id,
            copy_image_id,
            target,
            spec,
            ..
        } = request;
        let body = ReceiveCopyRequest {
            copy_image_id: copy_image_id.to_string(),
            owner: spec.owner.to_string(),
            source_region: self.region.to_string(),
            source_image_id: image_id.to_string(),
            name: spec.name.clone(),
            disk: DiskDto::from(spec.disk),
            os: spec.os.as_ref().map(OsDto::from),
            min_disk_gb: spec.min_disk_gb,
            tags: spec.tags.clone(),
            description: spec.description.clone(),
        };
        // The source event's id: a repeat is answered with the first reply, never a second copy.
        let command_id = uuid::Uuid::from_bytes(request.event_id);
        match send(
            &self.client,
            self.subjects
                .operator_command(target, ReceiveCopyRequest::NAME),
            command_payload(&body, Some(command_id), None),
        )
        .await
        {
            Ok(reply) if reply.ok => Ok(Ok(())),
            Ok(reply) => match reply.error {
                Some(error) if error.code == ims_wire::WireErrorCode::Unavailable => {
                    Err(Retry(error.to_string()))
                }
                Some(error) => Ok(Err(format!("region {target} refused the copy: {error}"))),
                None => Ok(Err(format!("region {target} refused the copy"))),
            },
            Err(Retry(why)) => {
                let since = *self.silent_since.get_or_insert_with(Instant::now);
                if since.elapsed() > TARGET_SILENCE_MAX {
                    return Ok(Err(format!(
                        "region {target} did not answer for {TARGET_SILENCE_MAX:?}: {why}"
                    )));
                }
                Err(Retry(why))
            }
        }
    }
}

/// Runs the copy saga of `region` until `stop` completes.
pub async fn run_copy_saga(
    mut saga: CopySaga,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), SagaError> {
    tokio::pin!(stop);
    loop {
        // A stop does not wait for a step's requests to time out (NATS down, no writer): a
        // step cut short is one a crash would cut short, redone from the checkpoint at start.
        tokio::select! {
            _ = &mut stop => return Ok(()),
            stepped = saga.step() => stepped?,
        };
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

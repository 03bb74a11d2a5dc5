//! Verification: the chain, the stored image files, and the live read models against a rebuild.

use bytes::Bytes;
use ims_domain::RegionId;
use ims_log::ChainCheck;
use ims_projection::{Catalog, ReadModel, Store, UsageLedger};
use ims_wire::Subjects;
use serde_json::{json, Value};

use crate::replay::{replay, replay_with_state, Until};
use crate::{AuditError, LogSource};

/// Checks the stored file of every active image that was imported: it exists, with the size
/// and SHA-256 the log recorded. Returns one line per problem (none: all hold).
pub async fn verify_objects(
    source: &LogSource,
    region: &RegionId,
    store: Option<&ims_store::ImageStore>,
) -> Result<Vec<String>, AuditError> {
    // The domain state holds each image's file facts, size and checksum.
    let replayed = replay_with_state(source, region, Until::Position(u64::MAX), |_| {}).await?;
    let state = replayed.state.unwrap_or_default();
    let mut problems = Vec::new();
    for image in state.images.values() {
        let (Some(_), Some(size), Some(checksum)) =
            (&image.file, image.size_bytes, &image.checksum_sha256)
        else {
            continue;
        };
        if image.status != ims_domain::ImageStatus::Active {
            continue;
        }
        let Some(store) = store else {
            problems.push(format!(
                "image {}: its object is missing (the region has no image store)",
                image.id
            ));
            continue;
        };
        match store.digest(&image.id).await {
            Err(error) => problems.push(format!(
                "image {}: its object cannot be read ({error})",
                image.id
            )),
            Ok(None) => problems.push(format!("image {}: its object is missing", image.id)),
            Ok(Some((length, _))) if length != size => problems.push(format!(
                "image {}: its object is {length} bytes, the log says {size}",
                image.id
            )),
            Ok(Some((_, digest))) if &digest != checksum => problems.push(format!(
                "image {}: its object's SHA-256 is {digest}, the log says {checksum}",
                image.id
            )),
            Ok(Some(_)) => {}
        }
    }
    Ok(problems)
}

/// The first break in the chain: a missing position, a bad link or a bad hash.
pub async fn verify_chain(
    source: &LogSource,
    progress: impl Fn(u64),
) -> Result<Result<u64, (u64, String)>, AuditError> {
    let head = source.head().await?;
    if let LogSource::Offline(log) = source {
        // On disk, the log's own check also names events too damaged to decode.
        let checked = log.verify(1..=head)?;
        progress(head);
        return Ok(checked
            .map(|()| head)
            .map_err(|broken| (broken.position, broken.problem)));
    }
    let mut chain = ChainCheck::from_start();
    let mut broken = None;
    source
        .scan(1, head, |batch| -> Result<bool, AuditError> {
            for envelope in batch {
                // Read through log.read, an event's place is the position it says.
                if let Err(problem) = chain.check(envelope, envelope.position()) {
                    broken = Some((problem.position, problem.problem));
                    return Ok(false);
                }
            }
            progress(chain.expected() - 1);
            Ok(true)
        })
        .await?;
    if broken.is_none() && chain.expected() <= head {
        broken = Some((chain.expected(), "event is missing".to_owned()));
    }
    Ok(match broken {
        Some(broken) => Err(broken),
        None => Ok(head),
    })
}

/// Compares a live read model's rows with a rebuild's; returns the first differing row.
pub fn first_difference(
    live: &[(Vec<u8>, Vec<u8>)],
    rebuilt: &Store,
) -> Result<Option<String>, AuditError> {
    let rebuilt = rebuilt.entries()?;
    for index in 0..live.len().max(rebuilt.len()) {
        match (live.get(index), rebuilt.get(index)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some((key, _)), Some((other, _))) if key != other => {
                return Ok(Some(format!(
                    "row {index}: the live model has key {} where a rebuild has key {}",
                    hex::encode(key),
                    hex::encode(other)
                )));
            }
            (Some((key, _)), Some(_)) => {
                return Ok(Some(format!(
                    "row {index}: key {} has a different value than in a rebuild",
                    hex::encode(key)
                )))
            }
            (Some((key, _)), None) => {
                return Ok(Some(format!(
                    "row {index}: key {} is in the live model but not in a rebuild",
                    hex::encode(key)
                )))
            }
            (None, Some((key, _))) => {
                return Ok(Some(format!(
                    "row {index}: key {} is missing from the live model",
                    hex::encode(key)
                )))
            }
            (None, None) => break,
        }
    }
    Ok(None)
}

/// Where the live read models to check are.
#[derive(Debug)]
pub enum LiveModels<'a> {
    /// The projections folder of a stopped service.
    Offline(&'a std::path::Path),
    /// A running service, through `audit.rows`.
    Online {
        client: &'a async_nats::Client,
        subjects: &'a Subjects,
        region: &'a RegionId,
    },
}

/// Tries at reading a consistent copy of a model from a service that keeps applying events.
const CONSISTENT_READ_TRIES: usize = 5;

async fn online_rows(
    client: &async_nats::Client,
    subject: &str,
    model: &str,
) -> Result<(u64, Vec<(Vec<u8>, Vec<u8>)>), AuditError> {
    'attempt: for _ in 0..CONSISTENT_READ_TRIES {
        let mut rows = Vec::new();
        let mut checkpoint = None;
        let mut after: Option<String> = None;
        loop {
            let request = json!({"model": model, "after": after, "max": 2000});
            let message = client
                .request(
                    subject.to_owned(),
                    Bytes::from(serde_json::to_vec(&request)?),
                )
                .await
                .map_err(|error| AuditError::Nats {
                    subject: subject.to_owned(),
                    error: error.into(),
                })?;
            let page: Value = serde_json::from_slice(&message.payload)?;
            if page["ok"] == false {
                return Err(AuditError::Answered(format!(
                    "{subject} answered {}",
                    page["error"]
                )));
            }
            let page_checkpoint = page["checkpoint"]
                .as_u64()
                .ok_or_else(|| AuditError::Answered(format!("{subject}: no checkpoint")))?;
            if checkpoint.is_some_and(|c| c != page_checkpoint) {
                continue 'attempt; // the model moved on between pages: start again
            }
            checkpoint = Some(page_checkpoint);
            let page_rows = page["rows"].as_array().cloned().unwrap_or_default();
            for row in &page_rows {
                let key = hex::decode(row[0].as_str().unwrap_or_default())?;
                let value = hex::decode(row[1].as_str().unwrap_or_default())?;
                rows.push((key, value));
            }
            // The page is cut by count and by bytes; `next_after` says whether more follow.
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return Ok((page_checkpoint, rows)),
            }
        }
    }
    Err(AuditError::Answered(format!(
        "the {model} model kept changing while it was read; run verify when the service is \
         idle, or offline"
    )))
}

/// Checks every live read model against a rebuild from position 1 up to the model's own
/// checkpoint. Returns, per model, `None` when equal or the first differing row.
pub async fn verify_models(
    source: &LogSource,
    region: &RegionId,
    live: LiveModels<'_>,
) -> Result<Vec<(String, Option<String>)>, AuditError> {
    let mut results = Vec::new();
    for model in ["catalog", "usage"] {
        let (checkpoint, rows) = match &live {
            LiveModels::Offline(dir) => {
                let entries = |store: &Store| store.entries();
                if model == "catalog" {
                    let opened = ReadModel::open(dir, Catalog)?;
                    (opened.checkpoint(), entries(opened.store())?)
                } else {
                    let opened = ReadModel::open(dir, UsageLedger)?;
                    (opened.checkpoint(), entries(opened.store())?)
                }
            }
            LiveModels::Online {
                client,
                subjects,
                region,
            } => online_rows(client, &subjects.audit(region, "rows"), model).await?,
        };
        let rebuilt = replay(source, region, Until::Position(checkpoint), |_| {}).await?;
        let store = if model == "catalog" {
            rebuilt.catalog.store()
        } else {
            rebuilt.usage.store()
        };
        results.push((model.to_owned(), first_difference(&rows, store)?));
    }
    Ok(results)
}

//! Verification: the chain, the stored image files, and the live read models against a rebuild.

use bytes::Bytes;
use ims_domain::RegionId;
use ims_log::ChainCheck;
use ims_projection::store::Entry;
use ims_projection::{Catalog, Fold, ProjectionError, ReadModel, Store, UsageLedger};
use ims_wire::Subjects;
use serde_json::{json, Value};

use crate::{AuditError, LogSource};

/// Checks the stored file of every active image that was imported, as the rebuilt `catalog`
/// (advanced to the log's head first) records it: it exists, with the size and SHA-256 the log
/// recorded. Returns one line per problem (none: all hold).
pub async fn verify_objects(
    source: &LogSource,
    catalog: &mut Rebuilt<Catalog>,
    store: Option<&ims_store::ImageStore>,
) -> Result<Vec<String>, AuditError> {
    catalog.advance(source, source.head().await?).await?;
    let mut problems = Vec::new();
    for row in catalog.model.store().scan_from(b"i", b"i".to_vec()) {
        let (_, bytes) = row?;
        let image: ims_domain::Image =
            ims_log::decode(&bytes, || "a rebuilt image record".to_owned())?;
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

/// A read model rebuilt from position 1 in bounded memory: past [`REBUILD_ROWS_IN_MEMORY`]
/// changed rows it spills them to sorted files in a scratch folder of its own, removed with it.
#[derive(Debug)]
pub struct Rebuilt<F> {
    model: ReadModel<F>,
    _scratch: tempfile::TempDir,
}

/// sled's cache for a live model read offline, once, in key order. sled weighs a page at its
/// size on disk and holds about ten times that in memory for the catalog's small rows: a probe
/// reading the 10M-event region's catalog (12.5M rows) held 595 MB with 32 MiB, 298 MB (what
/// opening it holds) with 4 MiB.
const SCAN_CACHE_BYTES: u64 = 4 << 20;

/// Rows a rebuild keeps in memory before it writes them to disk (about 100 MiB for the catalog).
pub const REBUILD_ROWS_IN_MEMORY: usize = 500_000;

impl<F: Fold> Rebuilt<F> {
    pub fn new(fold: F) -> Result<Self, AuditError> {
        let scratch = tempfile::Builder::new()
            .prefix("ims-verify-")
            .tempdir()
            .map_err(|error| {
                AuditError::Answered(format!("a scratch folder for the rebuild: {error}"))
            })?;
        Ok(Self {
            model: ReadModel::spilling(fold, scratch.path().to_owned(), REBUILD_ROWS_IN_MEMORY),
            _scratch: scratch,
        })
    }

    /// Applies the events after the rebuild's checkpoint up to `to`.
    pub async fn advance(&mut self, source: &LogSource, to: u64) -> Result<(), AuditError> {
        let from = self.model.checkpoint() + 1;
        if from > to {
            return Ok(());
        }
        let model = &mut self.model;
        source
            .scan(from, to, |batch| -> Result<bool, AuditError> {
                model.apply(batch)?;
                Ok(true)
            })
            .await?;
        Ok(())
    }

    pub fn checkpoint(&self) -> u64 {
        self.model.checkpoint()
    }
}

/// A running service whose read models `audit.rows` serves.
#[derive(Debug)]
pub struct LiveService<'a> {
    pub client: &'a async_nats::Client,
    pub subjects: &'a Subjects,
    pub region: &'a RegionId,
}

/// Tries at reading a consistent copy of a model from a service that keeps applying events.
const CONSISTENT_READ_TRIES: usize = 5;

/// Compares rows in key order, as they come, with a rebuild's: the first difference, if any.
#[derive(Debug, Default)]
struct Comparison {
    index: u64,
}

impl Comparison {
    /// Takes the next live row (`None`: the live rows ended) against the rebuild's next.
    fn next(&mut self, live: Option<Entry>, rebuilt: Option<Entry>) -> Option<String> {
        let index = self.index;
        self.index += 1;
        match (live, rebuilt) {
            (Some(a), Some(b)) if a == b => None,
            (Some((key, _)), Some((other, _))) if key != other => Some(format!(
                "row {index}: the live model has key {} where a rebuild has key {}",
                hex::encode(key),
                hex::encode(other)
            )),
            (Some((key, _)), Some(_)) => Some(format!(
                "row {index}: key {} has a different value than in a rebuild",
                hex::encode(key)
            )),
            (Some((key, _)), None) => Some(format!(
                "row {index}: key {} is in the live model but not in a rebuild",
                hex::encode(key)
            )),
            (None, Some((key, _))) => Some(format!(
                "row {index}: key {} is missing from the live model",
                hex::encode(key)
            )),
            (None, None) => None,
        }
    }
}

/// Compares `live` rows (in key order) with `rebuilt`'s, as they come.
pub fn first_difference(
    live: impl Iterator<Item = Result<Entry, ProjectionError>>,
    rebuilt: &Store,
) -> Result<Option<String>, AuditError> {
    let mut comparison = Comparison::default();
    let mut rebuilt = rebuilt.scan_from(b"", Vec::new());
    let mut live = live;
    loop {
        let (a, b) = (live.next().transpose()?, rebuilt.next().transpose()?);
        let end = a.is_none() && b.is_none();
        if let Some(difference) = comparison.next(a, b) {
            return Ok(Some(difference));
        }
        if end {
            return Ok(None);
        }
    }
}

/// One page of `audit.rows`: the model's checkpoint, its rows, and the key to ask after next.
async fn online_page(
    client: &async_nats::Client,
    subject: &str,
    model: &str,
    after: Option<&str>,
) -> Result<(u64, Vec<Entry>, Option<String>), AuditError> {
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
    let checkpoint = page["checkpoint"]
        .as_u64()
        .ok_or_else(|| AuditError::Answered(format!("{subject}: no checkpoint")))?;
    let mut rows = Vec::new();
    for row in page["rows"].as_array().into_iter().flatten() {
        let key = hex::decode(row[0].as_str().unwrap_or_default())?;
        let value = hex::decode(row[1].as_str().unwrap_or_default())?;
        rows.push((key, value));
    }
    // The page is cut by count and by bytes; `next_after` says whether more follow.
    Ok((
        checkpoint,
        rows,
        page["next_after"].as_str().map(str::to_owned),
    ))
}

/// Compares a running service's model, page by page, with `rebuilt`, advancing the rebuild to
/// the model's checkpoint; starts again (from the rebuild as it is) when the model moves on.
async fn compare_online<F: Fold>(
    client: &async_nats::Client,
    subject: &str,
    source: &LogSource,
    rebuilt: &mut Rebuilt<F>,
) -> Result<Option<String>, AuditError> {
    'attempt: for _ in 0..CONSISTENT_READ_TRIES {
        let (checkpoint, mut rows, mut next) = online_page(client, subject, F::NAME, None).await?;
        rebuilt.advance(source, checkpoint).await?;
        if rebuilt.checkpoint() != checkpoint {
            continue 'attempt; // a model ahead of the log it was read from: read it again
        }
        let mut comparison = Comparison::default();
        let mut expected = rebuilt.model.store().scan_from(b"", Vec::new());
        loop {
            for row in rows.drain(..) {
                if let Some(difference) = comparison.next(Some(row), expected.next().transpose()?) {
                    return Ok(Some(difference));
                }
            }
            let Some(after) = next.take() else { break };
            let (page_checkpoint, page_rows, page_next) =
                online_page(client, subject, F::NAME, Some(&after)).await?;
            if page_checkpoint != checkpoint {
                continue 'attempt; // the model moved on between pages
            }
            (rows, next) = (page_rows, page_next);
        }
        return Ok(comparison.next(None, expected.next().transpose()?));
    }
    Err(AuditError::Answered(format!(
        "the {} model kept changing while it was read; run verify when the service is \
         idle, or offline",
        F::NAME
    )))
}

/// [`verify_models`] for a stopped service, its read models in `dir`, with one large database
/// open at a time (on a 10M-event region the log and the catalog model hold about 250 and
/// 300 MiB open, a rebuild up to 150 MB): the caller has closed the log; the live checkpoints
/// are read, each model is rebuilt to its checkpoint with the log `open`ed, and the log is
/// closed again while the live models are read.
pub async fn verify_models_offline(
    open_log: impl Fn() -> Result<LogSource, AuditError>,
    dir: &std::path::Path,
) -> Result<(Vec<(String, Option<String>)>, Rebuilt<Catalog>), AuditError> {
    let checkpoints = (
        live_checkpoint(Catalog, dir)?,
        live_checkpoint(UsageLedger, dir)?,
    );
    let mut catalog = Rebuilt::new(Catalog)?;
    let mut usage = Rebuilt::new(UsageLedger)?;
    {
        let source = open_log()?;
        catalog.advance(&source, checkpoints.0).await?;
        usage.advance(&source, checkpoints.1).await?;
    }
    catalog.model.settle()?;
    usage.model.settle()?;
    let results = vec![
        (
            Catalog::NAME.to_owned(),
            compare_offline(Catalog, dir, &catalog)?,
        ),
        (
            UsageLedger::NAME.to_owned(),
            compare_offline(UsageLedger, dir, &usage)?,
        ),
    ];
    Ok((results, catalog))
}

/// The checkpoint of the live model in `dir`, which is closed again.
fn live_checkpoint<F: Fold>(fold: F, dir: &std::path::Path) -> Result<u64, AuditError> {
    Ok(ReadModel::open_with_cache(dir, fold, SCAN_CACHE_BYTES)?.checkpoint())
}

/// Reads the live model in `dir` once, in key order (a cache buys nothing but memory), against
/// `rebuilt`, which must be at the model's checkpoint.
fn compare_offline<F: Fold>(
    fold: F,
    dir: &std::path::Path,
    rebuilt: &Rebuilt<F>,
) -> Result<Option<String>, AuditError> {
    let live = ReadModel::open_with_cache(dir, fold, SCAN_CACHE_BYTES)?;
    if live.checkpoint() != rebuilt.checkpoint() {
        return Err(AuditError::Answered(format!(
            "the {} model moved from position {} to {} while verify read it: stop the \
             service first, or verify online",
            F::NAME,
            rebuilt.checkpoint(),
            live.checkpoint()
        )));
    }
    first_difference(
        live.store().scan_from(b"", Vec::new()),
        rebuilt.model.store(),
    )
}

/// Checks every read model of a running service against a rebuild from position 1 up to the
/// model's own checkpoint. Returns, per model, `None` when equal or the first differing row, and
/// the catalog's rebuild, which [`verify_objects`] reads.
pub async fn verify_models(
    source: &LogSource,
    live: LiveService<'_>,
) -> Result<(Vec<(String, Option<String>)>, Rebuilt<Catalog>), AuditError> {
    let mut catalog = Rebuilt::new(Catalog)?;
    let mut usage = Rebuilt::new(UsageLedger)?;
    let subject = live.subjects.audit(live.region, "rows");
    let results = vec![
        (
            Catalog::NAME.to_owned(),
            compare_online(live.client, &subject, source, &mut catalog).await?,
        ),
        (
            UsageLedger::NAME.to_owned(),
            compare_online(live.client, &subject, source, &mut usage).await?,
        ),
    ];
    Ok((results, catalog))
}

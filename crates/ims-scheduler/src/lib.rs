//! The scheduler of a region (DESIGN.md section 13). Owners and the operator schedule an
//! image's obsolescence and deletion with `deprecate-image`, and a tenant's delete schedules the
//! purge of its recycle bin (see `Image::scheduled`); the scheduler carries each out when its
//! time comes, as a command of actor `scheduler` whose id is derived from the image, the
//! transition and its time. Sent again after a crash, it is answered from the log's command
//! index and recorded once; and `decide` carries it out only while the image still has it
//! scheduled, so a schedule changed in the meantime is never acted on.
//!
//! It runs beside the region's writer, in the one process that holds the log (so with several
//! imsd processes only the writer's schedules), and follows the durable part of the log itself.
//! Its own sled database under `<data-dir>/<region>/scheduler` keeps, in one tree:
//! - `c`: the position followed to (u64 BE);
//! - `d` + due ms (u64 BE) + image id (16) + transition (1): a transition waiting for its time;
//! - `i` + image id (16): the image's scheduled (due ms, transition) pairs, so that a new
//!   schedule removes the old one's `d` keys.
//!
//! An event that can change a schedule makes it fold the image's own stream (a handful of
//! events) and record what `Image::scheduled` says; a database ahead of the log (one restored
//! from an older copy) is rebuilt from the log.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ims_domain::{
    evolve, Actor, Command, Image, ImageId, RegionId, ScheduledTransition, State, StreamId,
    Transition,
};
use ims_log::{decode_event, Envelope, EventLog, LogError};
use ims_wire::{CommandMeta, ParsedCommand, WireErrorCode};
use ims_writer::WriterHandle;

/// How often the scheduler looks for due transitions: the latest a transition happens.
pub const TICK: Duration = Duration::from_millis(250);

/// Events read from the log at once.
const FOLLOW_BATCH: usize = 1000;

/// Due transitions sent in one tick; the rest wait for the next.
const DUE_BATCH: usize = 256;

const FOLLOWED_KEY: &[u8] = b"c";

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the scheduler's database: {0}")]
    Db(#[from] sled::Error),
}

/// The scheduler of one region.
pub struct Scheduler {
    region: RegionId,
    log: EventLog,
    writer: WriterHandle,
    db: sled::Db,
    followed: u64,
    /// Transitions sent since the start (the failpoint counts them).
    sent: u64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("region", &self.region)
            .field("followed", &self.followed)
            .finish_non_exhaustive()
    }
}

fn transition_code(transition: Transition) -> u8 {
    match transition {
        Transition::Obsolete => 0,
        Transition::Delete => 1,
        Transition::Purge => 2,
    }
}

fn transition_of(code: u8) -> Option<Transition> {
    match code {
        0 => Some(Transition::Obsolete),
        1 => Some(Transition::Delete),
        2 => Some(Transition::Purge),
        _ => None,
    }
}

fn due_key(due_ms: u64, image_id: &ImageId, transition: Transition) -> Vec<u8> {
    let mut key = Vec::with_capacity(26);
    key.push(b'd');
    key.extend_from_slice(&due_ms.to_be_bytes());
    key.extend_from_slice(image_id.as_bytes());
    key.push(transition_code(transition));
    key
}

fn from_due_key(key: &[u8]) -> Option<ScheduledTransition> {
    let (due, rest) = key.get(1..)?.split_at_checked(8)?;
    let (id, code) = rest.split_at_checked(16)?;
    let [code] = code else { return None };
    Some(ScheduledTransition {
        image_id: ImageId::from_bytes(id.try_into().ok()?),
        transition: transition_of(*code)?,
        due_ms: u64::from_be_bytes(due.try_into().ok()?),
    })
}

fn image_key(image_id: &ImageId) -> Vec<u8> {
    [&b"i"[..], image_id.as_bytes()].concat()
}

/// An image's scheduled transitions: (due ms, transition).
type Schedule = Vec<(u64, Transition)>;

/// An image's schedule as stored under its `i` key: 9 bytes per transition.
fn encode_schedule(schedule: &[(u64, Transition)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(schedule.len() * 9);
    for (due_ms, transition) in schedule {
        bytes.extend_from_slice(&due_ms.to_be_bytes());
        bytes.push(transition_code(*transition));
    }
    bytes
}

fn decode_schedule(bytes: &[u8]) -> Schedule {
    bytes
        .chunks_exact(9)
        .filter_map(|chunk| {
            let due = u64::from_be_bytes(chunk[..8].try_into().ok()?);
            Some((due, transition_of(chunk[8])?))
        })
        .collect()
}

/// Whether an event can change its image's schedule (see `Image::scheduled`).
fn reschedules(envelope: &Envelope) -> bool {
    matches!(
        envelope.body.event_type.as_str(),
        "deprecation_set"
            | "image_deleted"
            | "image_deprecated"
            | "image_recycled"
            | "image_restored"
    )
}

/// The command that carries `transition` out, with its derived id.
pub fn transition_command(transition: ScheduledTransition) -> ParsedCommand {
    use sha2::{Digest, Sha256};
    let mut seed = Vec::with_capacity(25);
    seed.extend_from_slice(transition.image_id.as_bytes());
    seed.push(transition_code(transition.transition));
    seed.extend_from_slice(&transition.due_ms.to_be_bytes());
    let command = Command::Scheduled(transition);
    let digest = Sha256::new()
        .chain_update(command.name().as_bytes())
        .chain_update(&seed)
        .finalize()
        .into();
    ParsedCommand {
        meta: CommandMeta {
            command_id: Some(ims_bus::derived_command_id("scheduled-transition", &seed)),
            expected_version: None,
            digest,
        },
        command,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Scheduler {
    /// Opens the scheduler's database under `dir`.
    pub fn open(
        region: RegionId,
        log: EventLog,
        writer: WriterHandle,
        dir: &Path,
    ) -> Result<Self, SchedulerError> {
        let db = ims_log::open_sled(sled::Config::new().path(dir))?;
        let followed = db.get(FOLLOWED_KEY)?.map_or(0, |value| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&value[..8]);
            u64::from_be_bytes(bytes)
        });
        Ok(Self {
            region,
            log,
            writer,
            db,
            followed,
            sent: 0,
        })
    }

    /// Reads the durable events past the position followed to, and records what they schedule.
    fn follow(&mut self) -> Result<(), SchedulerError> {
        loop {
            let head = self.log.head_position();
            if self.followed > head {
                // Its database came with another log (the log was restored from an older copy,
                // say): what it holds is derived, so it is rebuilt from this log.
                tracing::warn!(region = %self.region, followed = self.followed, head, "the scheduler's database is ahead of the log; rebuilding it from the log");
                self.db.clear()?;
                self.db.flush()?;
                self.followed = 0;
                continue;
            }
            if self.followed == head {
                return Ok(());
            }
            let max =
                usize::try_from(head - self.followed).map_or(FOLLOW_BATCH, |n| n.min(FOLLOW_BATCH));
            let envelopes = self.log.read_range(self.followed + 1, max)?;
            let Some(last) = envelopes.last().map(Envelope::position) else {
                return Ok(());
            };
            self.record(&envelopes)?;
            self.followed = last;
        }
    }

    /// The image's schedule as its stream leaves it (a handful of events).
    fn schedule_of(&self, image_id: ImageId) -> Result<Schedule, SchedulerError> {
        let mut state = State::default();
        for envelope in self
            .log
            .read_stream(&StreamId::Image(image_id).to_string())?
        {
            evolve(&mut state, &decode_event(&envelope)?);
        }
        Ok(state
            .images
            .get(&image_id)
            .map_or_else(Vec::new, Image::scheduled))
    }

    /// Records the schedules of the images `envelopes` reschedule, and the position after them,
    /// in one write.
    fn record(&self, envelopes: &[Envelope]) -> Result<(), SchedulerError> {
        let mut batch = sled::Batch::default();
        let rescheduled: BTreeSet<ImageId> = envelopes
            .iter()
            .filter(|envelope| reschedules(envelope))
            .filter_map(|envelope| envelope.body.stream.strip_prefix("image/"))
            .filter_map(|id| ImageId::parse(id).ok())
            .collect();
        for image_id in rescheduled {
            let before = self
                .db
                .get(image_key(&image_id))?
                .map_or_else(Vec::new, |bytes| decode_schedule(&bytes));
            for (due_ms, transition) in before {
                batch.remove(due_key(due_ms, &image_id, transition));
            }
            let schedule = self.schedule_of(image_id)?;
            for (due_ms, transition) in &schedule {
                batch.insert(due_key(*due_ms, &image_id, *transition), &[][..]);
            }
            if schedule.is_empty() {
                batch.remove(image_key(&image_id));
            } else {
                batch.insert(image_key(&image_id), encode_schedule(&schedule));
            }
        }
        if let Some(last) = envelopes.last() {
            batch.insert(FOLLOWED_KEY, &last.position().to_be_bytes()[..]);
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// The transitions due at `now_ms`, earliest first.
    fn due(&self, now_ms: u64) -> Result<Vec<ScheduledTransition>, SchedulerError> {
        let end = due_key(
            now_ms.saturating_add(1),
            &ImageId::from_bytes([0; 16]),
            Transition::Obsolete,
        );
        let mut due = Vec::new();
        for entry in self.db.range(b"d".to_vec()..end).take(DUE_BATCH) {
            let (key, _) = entry?;
            if let Some(transition) = from_due_key(&key) {
                due.push(transition);
            }
        }
        Ok(due)
    }

    /// Sends one due transition; `Ok(false)` when the writer cannot take it now (retried on the
    /// next tick).
    async fn carry_out(&mut self, transition: ScheduledTransition) -> Result<bool, SchedulerError> {
        let reply = self
            .writer
            .execute(Actor::Scheduler, transition_command(transition))
            .await;
        let outcome = match &reply.error {
            None => "done",
            Some(error) if error.code == WireErrorCode::Unavailable => return Ok(false),
            Some(error) => {
                // The schedule changed, the image was deleted or protected since: nothing to do.
                tracing::info!(region = %self.region, image_id = %transition.image_id, transition = transition.transition.as_str(), reason = %error.message, "scheduled transition not carried out");
                "refused"
            }
        };
        metrics::counter!("ims_scheduler_transitions_total", "transition" => transition.transition.as_str(), "outcome" => outcome).increment(1);
        self.sent += 1;
        #[cfg(feature = "failpoints")]
        if ims_log::failpoints::value("scheduler-abort-after") == Some(self.sent) {
            eprintln!(
                "injected abort after {} scheduled transitions (IMS_FAILPOINTS)",
                self.sent
            );
            std::process::abort();
        }
        self.db.remove(due_key(
            transition.due_ms,
            &transition.image_id,
            transition.transition,
        ))?;
        self.db.flush()?;
        Ok(true)
    }

    /// Follows the log, then carries out what is due.
    pub async fn step(&mut self) -> Result<(), SchedulerError> {
        self.follow()?;
        for transition in self.due(now_ms())? {
            if !self.carry_out(transition).await? {
                break;
            }
        }
        Ok(())
    }
}

/// Runs the scheduler until `stop` completes.
pub async fn run_scheduler(
    mut scheduler: Scheduler,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), SchedulerError> {
    tokio::pin!(stop);
    loop {
        scheduler.step().await?;
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_keys_sort_by_time_and_read_back() {
        let early = ImageId::from_bytes([9; 16]);
        let late = ImageId::from_bytes([1; 16]);
        let first = due_key(1_000, &early, Transition::Delete);
        let second = due_key(1_001, &late, Transition::Obsolete);
        assert!(
            first < second,
            "a later time sorts later whatever the image"
        );
        assert_eq!(
            from_due_key(&first),
            Some(ScheduledTransition {
                image_id: early,
                transition: Transition::Delete,
                due_ms: 1_000
            })
        );
        assert_eq!(from_due_key(b"d1234"), None);
    }

    #[test]
    fn a_database_ahead_of_its_log_is_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let region = RegionId::parse("test-1").unwrap();
        let log = EventLog::open(dir.path().join("log"), region.as_str()).unwrap();
        let (published, _events) = tokio::sync::mpsc::channel(1);
        let (writer, _thread) =
            ims_writer::spawn_writer(region.clone(), log.clone(), Default::default(), published);
        let path = dir.path().join("scheduler");
        {
            let db = ims_log::open_sled(sled::Config::new().path(&path)).unwrap();
            db.insert(FOLLOWED_KEY, &5u64.to_be_bytes()[..]).unwrap();
            let stale = due_key(1, &ImageId::from_bytes([1; 16]), Transition::Purge);
            db.insert(stale, &[][..]).unwrap();
            db.flush().unwrap();
        }
        let mut scheduler = Scheduler::open(region, log, writer, &path).unwrap();
        scheduler.follow().unwrap();
        assert_eq!(scheduler.followed, 0);
        assert!(scheduler.due(u64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_schedule_reads_back_what_was_stored() {
        let schedule = vec![(5, Transition::Obsolete), (u64::MAX, Transition::Delete)];
        assert_eq!(decode_schedule(&encode_schedule(&schedule)), schedule);
    }

    #[test]
    fn transition_commands_derive_the_same_id_for_the_same_transition_only() {
        let transition = ScheduledTransition {
            image_id: ImageId::from_bytes([7; 16]),
            transition: Transition::Obsolete,
            due_ms: 42,
        };
        let again = transition_command(transition);
        assert_eq!(transition_command(transition), again);
        let later = transition_command(ScheduledTransition {
            due_ms: 43,
            ..transition
        });
        assert_ne!(later.meta.command_id, again.meta.command_id);
    }
}

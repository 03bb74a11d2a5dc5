//! Verifying the hash chain over a range of positions.

use super::*;

impl EventLog {
    /// Checks `range` of positions: each present, decodable, at its own key, chained to the one
    /// before. `Ok(Err(broken))` names the first bad position; `Err` is a storage failure.
    pub fn verify(
        &self,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Result<(), Broken>, LogError> {
        let (from, to) = (*range.start().max(&1), *range.end());
        let mut chain = match self.hash_before(from)? {
            Ok(hash) => ChainCheck::after(from - 1, hash),
            Err(broken) => return Ok(Err(broken)),
        };
        for item in self.shared.db.range(event_key(from)..=event_key(u64::MAX)) {
            if chain.expected() > to {
                break;
            }
            let (key, value) = item?;
            let last_position = be_u64(&key[1..]);
            let envelopes = match decode_record(&value, last_position) {
                Ok(envelopes) => envelopes,
                Err(error) => return Ok(Err(broken(chain.expected(), error.to_string()))),
            };
            // Where each envelope of the record must sit, counting back from the key.
            let first_position = (last_position + 1).saturating_sub(envelopes.len() as u64);
            for (stored_at, envelope) in (first_position..).zip(&envelopes) {
                if stored_at < chain.expected() {
                    continue;
                }
                if stored_at > to {
                    break;
                }
                if let Err(broken) = chain.check(envelope, stored_at) {
                    return Ok(Err(broken));
                }
            }
        }
        if chain.expected() <= to && to <= self.head_position() {
            return Ok(Err(broken(chain.expected(), "event is missing")));
        }
        Ok(Ok(()))
    }

    /// The hash of the event before `from` (zeros before position 1), which `from` must chain to.
    fn hash_before(&self, from: u64) -> Result<Result<[u8; 32], Broken>, LogError> {
        if from == 1 {
            return Ok(Ok([0u8; 32]));
        }
        let previous = match self.record_holding(from - 1) {
            Ok(record) => record.into_iter().find(|e| e.position() == from - 1),
            Err(LogError::Corrupt { reason, .. }) => return Ok(Err(broken(from - 1, reason))),
            Err(error) => return Err(error),
        };
        Ok(match previous {
            Some(envelope) => Ok(envelope.hash),
            None => Err(broken(from - 1, "event is missing")),
        })
    }
}

fn broken(position: u64, problem: impl Into<String>) -> Broken {
    Broken {
        position,
        problem: problem.into(),
    }
}

/// The hash chain walked event by event, the one check of it that the log and the audits share:
/// each event must come at the next position, say that position, link to the hash of the one
/// before (zeros before position 1) and hash to what it says.
#[derive(Clone, Debug)]
pub struct ChainCheck {
    expected: u64,
    prev_hash: [u8; 32],
}

impl ChainCheck {
    /// A walk from position 1.
    pub fn from_start() -> Self {
        Self::after(0, [0u8; 32])
    }

    /// A walk that continues after the event at `position`, hashed `hash`.
    pub fn after(position: u64, hash: [u8; 32]) -> Self {
        Self {
            expected: position + 1,
            prev_hash: hash,
        }
    }

    /// The position the next event must have.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Checks `envelope`, found at `stored_at` (its key's position, or its own when read through
    /// `log.read`), and moves past it.
    pub fn check(&mut self, envelope: &Envelope, stored_at: u64) -> Result<(), Broken> {
        if stored_at != self.expected {
            return Err(broken(self.expected, "event is missing"));
        }
        if let Some(problem) = envelope_problem(envelope, stored_at, self.prev_hash) {
            return Err(broken(stored_at, problem));
        }
        self.prev_hash = envelope.hash;
        self.expected += 1;
        Ok(())
    }
}

/// What is wrong with `envelope`, stored at `stored_at` after an event hashed `prev_hash`.
fn envelope_problem(envelope: &Envelope, stored_at: u64, prev_hash: [u8; 32]) -> Option<String> {
    if envelope.position() != stored_at {
        Some(format!(
            "stored under position {stored_at} but says {}",
            envelope.position()
        ))
    } else if envelope.prev_hash != prev_hash {
        Some("prev_hash does not match the previous event's hash".to_owned())
    } else if !envelope.hash_is_valid() {
        Some("hash does not match the event's contents".to_owned())
    } else {
        None
    }
}

//! Named maximums of the fields a command can carry that the seed leaves open (DESIGN.md
//! section 11). With them and the seed's own limits (in [`crate::SharingPolicy`]), the largest
//! valid event fits in [`EVENT_ENVELOPE_BYTES_MAX`], so a batch of the log, a page and a reply
//! can always be cut to fit NATS.

/// ECS instance ids: printable ASCII, as clouds name instances (a UUID is 36).
pub const INSTANCE_ID_CHARS_MAX: usize = 128;

/// Data disks of one ECS image. Clouds attach at most a few dozen to one instance.
pub const DATA_DISKS_MAX: usize = 64;

/// Data disk ids: printable ASCII (cloud disk ids are UUIDs, 36). Half the instance id's 128,
/// so that 64 of them with every other field at its maximum still fit one 16 KiB envelope.
pub const DATA_DISK_ID_CHARS_MAX: usize = 64;

/// Image file URLs: ASCII (an IRI is percent-encoded), as browsers and object stores accept.
pub const URL_CHARS_MAX: usize = 2048;

/// KMS key ids: printable ASCII (ARNs and UUIDs are well under this).
pub const KMS_KEY_ID_CHARS_MAX: usize = 128;

/// Each of the os platform, version and arch.
pub const OS_FIELD_CHARS_MAX: usize = 64;

/// A Marketplace publisher's name.
pub const PUBLISHER_CHARS_MAX: usize = 64;

/// The reason a copy failed, as the saga records it.
pub const FAILURE_REASON_CHARS_MAX: usize = 1024;

/// Tenants named by one share or unshare: as many as an image may have members.
pub const SHARE_TARGETS_MAX: usize = 128;

/// The highest per-hour Marketplace price, in minor units (10 million of a currency with two
/// decimals). With [`USAGE_HOURS_MAX`], one charge is below 2^44, so a tenant's total in u64
/// holds over a million maximal charges; `decide` refuses the one that would not fit.
pub const PRICE_MINOR_PER_HOUR_MAX: u64 = 1_000_000_000;

/// Hours in one usage record: a leap year.
pub const USAGE_HOURS_MAX: u32 = 8_784;

/// The encoded size every event envelope stays under (pinned by a test in ims-log).
pub const EVENT_ENVELOPE_BYTES_MAX: usize = 16 * 1024;

/// How far ahead a deprecation transition may be scheduled: ten years.
pub const SCHEDULE_AHEAD_MS_MAX: u64 = 10 * 366 * 24 * 3600 * 1000;
